/* The run page: follows the run with the API's delta read (GET /runs/{id}?since=CURSOR), so
   each refresh costs what changed; renders the task tree with siblings of one family grouped
   (a group expands on demand), a timeline column, task details, and tails the logs. */
"use strict";

const RUN = document.body.dataset.run;
// plankton.states' lists, from the page (one list for Python, the pages and this script)
const ENDED = new Set(JSON.parse(document.body.dataset.ended));
const FINAL = new Set(JSON.parse(document.body.dataset.final));
const GROUP_MIN = 8;       // siblings of one family from this many on share one row
const SHOW_STEP = 100;     // rows an expanded group shows at a time
const POLL_MS = 500;

const tasks = new Map();   // id -> task, as the API shows it
let run = null, cursor = null, polls = 0, after = 0;
const expanded = new Set(), shown = new Map(), openDetails = new Set();
let logTask = null, logAfter = 0, logBusy = false;

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const ms = (iso) => iso ? Date.parse(iso) : null;

function banner(text) {
  const el = $("banner");
  el.hidden = !text;
  el.textContent = text || "";
}

async function poll() {
  // the first read is the full one (since=0), then deltas from its cursor
  const url = `/runs/${encodeURIComponent(RUN)}?since=${cursor === null ? 0 : cursor}`;
  const reply = await Plankton.call("GET", url);
  if (!reply.ok) {
    banner(`Cannot refresh: ${Plankton.message(reply.data)} (retrying)`);
    schedule(2000);
    return;
  }
  banner("");
  const d = reply.data;
  if (d.full) { tasks.clear(); setTimeout(examples, 0); }
  for (const t of d.tasks) tasks.set(t.id, t);
  const changed = d.full || d.tasks.length > 0 || !run || run.status !== d.status;
  cursor = d.cursor;
  run = d;
  polls += 1;
  if (changed) render();
  else renderTimes();
  if (settled()) return;  // the run ended and every task is final: nothing more can change
  // a tab in the background polls every 5 s; it catches up at once when shown again
  schedule(document.hidden ? 10 * POLL_MS : ENDED.has(d.status) ? 2 * POLL_MS : POLL_MS);
}

let pollTimer = null;
function schedule(ms) {
  pollTimer = setTimeout(() => { pollTimer = null; poll(); }, ms);
}
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && pollTimer !== null) { clearTimeout(pollTimer); pollTimer = null; poll(); }
});

/* The run ended and its tasks too (the scheduler settles a cancelled run's tasks just after
   the run's status changes), or it ended over a minute ago and some never will. */
let endedSeen = null;
function settled() {
  if (!ENDED.has(run.status)) return false;
  endedSeen = endedSeen ?? Date.now();
  if (Date.now() - endedSeen > 60000) return true;
  for (const t of tasks.values()) if (!FINAL.has(t.state)) return false;
  return true;
}

// -- the run's own fields --------------------------------------------------------------
function renderRun() {
  const status = $("run-status");
  status.textContent = run.status;
  status.className = `badge s-${run.status}`;
  document.body.dataset.status = run.status;
  $("run-started").textContent = Plankton.clock(run.started_at);
  $("run-ended").textContent = Plankton.clock(run.ended_at);
  $("run-result").textContent = run.result === null || run.result === undefined ? "" : JSON.stringify(run.result, null, 2);
  $("run-error").hidden = !run.error;
  $("run-error").textContent = run.error || "";
  const cancel = $("cancel");
  if (cancel) cancel.disabled = ENDED.has(run.status);
  const resume = $("resume");
  if (resume) resume.disabled = !["failed", "cancelled"].includes(run.status);
  const counts = {};
  for (const t of tasks.values()) counts[t.state] = (counts[t.state] || 0) + 1;
  $("run-counts").innerHTML = `${tasks.size} ` + stateBadges(counts);
  renderTimes();
}

function renderTimes() {
  if (!run) return;
  const start = ms(run.started_at || run.submitted_at);
  const end = run.ended_at ? ms(run.ended_at) : Date.now();
  $("run-duration").textContent = start ? Plankton.duration((end - start) / 1000) : "";
}

function stateBadges(counts) {
  return Object.keys(counts).sort().map(s => `<span class="badge s-${esc(s)}" data-count="${esc(s)}">${esc(s)} ${counts[s]}</span>`).join(" ");
}

// -- the tree --------------------------------------------------------------------------
function span() {
  let lo = Infinity, hi = -Infinity;
  for (const t of tasks.values()) {
    const s = ms(t.started_at);
    if (s === null) continue;
    lo = Math.min(lo, s);
    hi = Math.max(hi, t.ended_at ? ms(t.ended_at) : Date.now());
  }
  if (run.ended_at) hi = Math.max(hi, ms(run.ended_at));
  if (lo === Infinity) return null;
  return {lo, hi: Math.max(hi, lo + 1)};
}

function bar(s, e, state, window) {
  if (!window || s === null) return "";
  const left = (s - window.lo) / (window.hi - window.lo) * 100;
  const width = Math.max(0.4, ((e ?? Date.now()) - s) / (window.hi - window.lo) * 100);
  return `<div class="bar s-${esc(state)}" style="left:${left.toFixed(2)}%;width:${Math.min(width, 100 - left).toFixed(2)}%"></div>`;
}

function taskCells(t, window) {
  const s = ms(t.started_at), e = ms(t.ended_at);
  const seconds = s === null ? null : ((e ?? Date.now()) - s) / 1000;
  const p = t.processed || {emitted: 0, consumed: 0};
  const moved = Math.max(p.emitted, p.consumed);
  const rate = seconds && moved ? (moved / Math.max(seconds, 0.001)) : null;
  return `<td><span class="badge s-${esc(t.state)}">${esc(t.state)}</span>${t.reused_from ? ' <span class="muted">reused</span>' : ""}</td>` +
    `<td>${t.attempts}</td><td>${esc(Plankton.clock(t.started_at).slice(11))}</td><td>${esc(Plankton.clock(t.ended_at).slice(11))}</td>` +
    `<td>${esc(Plankton.duration(seconds))}</td><td>${p.emitted}</td><td>${p.consumed}</td>` +
    `<td>${rate === null ? "" : (rate >= 100 ? Math.round(rate) : rate.toFixed(1))}</td>` +
    `<td class="timeline">${bar(s, e, t.state, window)}</td>`;
}

function taskRow(t, depth, window, out) {
  const open = openDetails.has(t.id);
  out.push(`<tr class="task${open ? " open" : ""}" data-task="${esc(t.id)}" id="task-${esc(t.id)}"><td style="padding-left:${0.4 + depth * 1.1}em">` +
    `<a class="task-link" href="#task-${esc(t.id)}" data-open="${esc(t.id)}">${esc(t.name)}<span class="muted">#${esc(t.id)}</span></a>` +
    `${t.error ? ' <span class="s-text-failed" title="error">!</span>' : ""}</td>${taskCells(t, window)}</tr>`);
  if (open) out.push(details(t));
}

function details(t) {
  const rows = [
    ["family", esc(t.family)], ["params", `<code>${esc(JSON.stringify(t.params))}</code>`],
    ["param_hash", `<code class="hash">${esc(t.param_hash)}</code>`],
    ["tree_hash", `<code class="hash">${esc(t.tree_hash)}</code>`],
    ["queue", esc(t.queue)], ["worker", esc(t.worker || "")], ["host", esc(t.host || "")],
  ];
  if (t.parent) rows.push(["parent", `<a href="#task-${esc(t.parent)}" data-open="${esc(t.parent)}">#${esc(t.parent)}</a>`]);
  if (t.reused_from) rows.push(["reused from", `<a href="/ui/runs/${encodeURIComponent(t.reused_from)}">${esc(t.reused_from)}</a>`]);
  if (t.result !== null && t.result !== undefined) {
    let text = JSON.stringify(t.result);
    if (text.length > 2000) text = text.slice(0, 2000) + " …";
    rows.push(["result", `<pre class="result">${esc(text)}</pre>`]);
  }
  if (t.error) rows.push(["error", `<pre class="error traceback">${esc(t.error)}</pre>`]);
  rows.push(["log", `<button type="button" class="small secondary" data-log="${esc(t.id)}">show this task's log</button>`]);
  return `<tr class="details" data-details="${esc(t.id)}"><td colspan="10"><table class="facts">` +
    rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("") + "</table></td></tr>";
}

function groupRow(key, name, members, depth, window, out) {
  const counts = {};
  let emitted = 0, consumed = 0, lo = null, hi = null, running = false, attempts = 0;
  let reused = 0;
  for (const t of members) {
    counts[t.state] = (counts[t.state] || 0) + 1;
    if (t.reused_from) reused += 1;
    emitted += t.processed.emitted; consumed += t.processed.consumed;
    attempts = Math.max(attempts, t.attempts);
    const s = ms(t.started_at);
    if (s !== null) {
      lo = lo === null ? s : Math.min(lo, s);
      const e = t.ended_at ? ms(t.ended_at) : (running = true, Date.now());
      hi = hi === null ? e : Math.max(hi, e);
    }
  }
  const open = expanded.has(key);
  const state = counts.failed ? "failed" : (running ? "running" : (counts.succeeded === members.length ? "succeeded" : "queued"));
  out.push(`<tr class="group${open ? " open" : ""}" data-group="${esc(key)}"><td style="padding-left:${0.4 + depth * 1.1}em">` +
    `<button type="button" class="toggle" data-toggle="${esc(key)}">${open ? "▾" : "▸"}</button> ${esc(name)} <span class="muted">× ${members.length}</span></td>` +
    `<td colspan="2">${stateBadges(counts)}${reused ? ` <span class="muted">(${reused} reused)</span>` : ""}</td><td>${esc(Plankton.clock(lo === null ? null : new Date(lo).toISOString()).slice(11))}</td>` +
    `<td>${running || hi === null ? "" : esc(Plankton.clock(new Date(hi).toISOString()).slice(11))}</td>` +
    `<td>${lo === null ? "" : esc(Plankton.duration((hi - lo) / 1000))}</td><td>${emitted}</td><td>${consumed}</td><td>max att. ${attempts}</td>` +
    `<td class="timeline">${bar(lo, running ? null : hi, state, window)}</td></tr>`);
  if (!open) return;
  const limit = shown.get(key) || SHOW_STEP;
  for (const t of members.slice(0, limit)) walk(t, depth + 1, window, out);
  if (members.length > limit) {
    out.push(`<tr class="more"><td colspan="10" style="padding-left:${1.5 + depth * 1.1}em"><button type="button" class="small secondary" data-more="${esc(key)}">show ${Math.min(SHOW_STEP, members.length - limit)} more of ${members.length - limit}</button></td></tr>`);
  }
}

function walk(t, depth, window, out) {
  taskRow(t, depth, window, out);
  const kids = (t.children || []).map(id => tasks.get(String(id))).filter(Boolean);
  const families = new Map();
  for (const k of kids) {
    if (!families.has(k.name)) families.set(k.name, []);
    families.get(k.name).push(k);
  }
  for (const [name, members] of families) {
    if (members.length >= GROUP_MIN) groupRow(`${t.id}/${name}`, name, members, depth + 1, window, out);
    else for (const k of members) walk(k, depth + 1, window, out);
  }
}

function render() {
  renderRun();
  const window = span();
  $("timeline-span").textContent = window ? Plankton.duration((window.hi - window.lo) / 1000) : "";
  const root = tasks.get(document.body.dataset.root) || [...tasks.values()].find(t => !t.parent);
  const out = [];
  if (root) walk(root, 0, window, out);
  $("tree-body").innerHTML = out.join("") || '<tr><td colspan="10" class="muted">no tasks</td></tr>';
  $("tree-note").textContent = `(${tasks.size} tasks; refreshed ${polls} times, each reading only what changed)`;
}

// -- opening tasks and groups -----------------------------------------------------------
function revealTask(id) {
  const t = tasks.get(id);
  if (!t) return;
  openDetails.add(id);
  // expand every group on the way down to it
  let child = t;
  while (child.parent) {
    const parent = tasks.get(child.parent);
    if (!parent) break;
    const key = `${parent.id}/${child.name}`;
    expanded.add(key);
    const members = (parent.children || []).map(String).filter(c => tasks.get(c) && tasks.get(c).name === child.name);
    const at = members.indexOf(child.id);
    if (at >= (shown.get(key) || SHOW_STEP)) shown.set(key, at + 1);
    child = parent;
  }
  render();
  const row = $(`task-${id}`);
  if (row) row.scrollIntoView({block: "center"});
}

document.addEventListener("click", (event) => {
  const el = event.target.closest("[data-toggle],[data-more],[data-open],[data-log]");
  if (!el) return;
  if (el.dataset.toggle) {
    const key = el.dataset.toggle;
    if (expanded.has(key)) expanded.delete(key); else expanded.add(key);
    render();
  } else if (el.dataset.more) {
    shown.set(el.dataset.more, (shown.get(el.dataset.more) || SHOW_STEP) + SHOW_STEP);
    render();
  } else if (el.dataset.open) {
    event.preventDefault();
    const id = el.dataset.open;
    if (openDetails.has(id) && history.state === id) { openDetails.delete(id); render(); return; }
    history.replaceState(id, "", `#task-${id}`);
    revealTask(id);
  } else if (el.dataset.log) {
    followLog(el.dataset.log);
  }
});

// -- logs ------------------------------------------------------------------------------
function followLog(task) {
  logTask = task;
  logAfter = 0;
  $("log-lines").textContent = "";
  const t = task === null ? null : tasks.get(task);
  $("log-which").textContent = task === null ? "all tasks" : `${t ? t.name : ""}#${task}`;
  $("log-all").hidden = task === null;
  $("logs").scrollIntoView({block: "nearest"});
  tailLog();
}

async function tailLog() {
  if (logBusy) return;
  logBusy = true;
  const wanted = logTask;
  const query = `after=${logAfter}` + (wanted === null ? "" : `&task=${encodeURIComponent(wanted)}`);
  const reply = await Plankton.call("GET", `/ui/runs/${encodeURIComponent(RUN)}/logs?${query}`);
  logBusy = false;
  if (!reply.ok || wanted !== logTask) return;
  const box = $("log-lines");
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  const text = reply.data.lines.map(l => `${Plankton.clock(l.at).slice(11)} ${l.name}#${l.task} ${l.level}: ${l.line}\n`).join("");
  if (text) box.append(document.createTextNode(text));
  if (atBottom) box.scrollTop = box.scrollHeight;
  logAfter = reply.data.next;
  box.dataset.empty = box.textContent ? "no" : "yes";
  if (reply.data.more) tailLog();  // catching up on a long log: the next chunk at once
}
$("log-all").addEventListener("click", () => followLog(null));
setInterval(() => { if (!run || !settled() || polls < 3) tailLog(); }, 1000);

/* The overrides box's placeholder names params this run really has. */
function examples() {
  const seen = new Set(), lines = [];
  for (const t of tasks.values()) {
    for (const [k, v] of Object.entries(t.params || {})) {
      const key = `${t.name}.${k}`;
      if (k === "since" || k === "to" || seen.has(key) || lines.length >= 3) continue;
      seen.add(key);
      lines.push(`${key}=${typeof v === "string" ? v : JSON.stringify(v)}`);
    }
    if (lines.length >= 3) break;
  }
  if (lines.length) $("overrides").placeholder = lines.join("\n");
}

// -- actions: the API's own routes ------------------------------------------------------
function overrides() {
  const out = {};
  for (const line of $("overrides").value.split("\n")) {
    const text = line.trim();
    if (!text) continue;
    const at = text.indexOf("=");
    if (at < 1) throw new Error(`${text}: expected TASK.PARAM=VALUE`);
    out[text.slice(0, at).trim()] = text.slice(at + 1).trim();
  }
  return out;
}

$("cancel").addEventListener("click", async () => {
  const reply = await Plankton.call("POST", `/runs/${encodeURIComponent(RUN)}/cancel`);
  $("cancel-msg").textContent = reply.ok ? `run is ${reply.data.status}` : Plankton.message(reply.data);
});

if ($("resume")) {
  // first the dry run: what runs and what is reused, and why; then the resume itself
  let resumeParams = null;
  $("resume").addEventListener("click", async () => {
    $("resume-msg").textContent = "";
    let params;
    try { params = overrides(); } catch (e) { $("resume-msg").textContent = e.message; return; }
    const reply = await Plankton.call("POST", `/runs/${encodeURIComponent(RUN)}/rerun?dry_run=true`, {params, from_failure: true});
    if (!reply.ok) { $("resume-msg").textContent = Plankton.message(reply.data); return; }
    resumeParams = params;
    const plan = reply.data;
    $("resume-summary").textContent = `${plan.run} task(s) run again, ${plan.reuse} reused` +
      (plan.code_changed ? `; code version ${plan.code_changed.recorded} → ${plan.code_changed.today} (reused values were made by the old code)` : "") + ".";
    $("resume-tasks").tBodies[0].innerHTML = (plan.tasks || []).map(t =>
      `<tr class="resume-${esc(t.action)}"><td><a href="#task-${esc(t.id)}" data-open="${esc(t.id)}">${esc(t.name)}#${esc(t.id)}</a></td>` +
      `<td>${esc(t.action)}</td><td>${esc(t.reason)}</td></tr>`).join("");
    $("resume-plan").hidden = false;
  });
  $("resume-back").addEventListener("click", () => { $("resume-plan").hidden = true; });
  $("resume-confirm").addEventListener("click", async () => {
    const reply = await Plankton.call("POST", `/runs/${encodeURIComponent(RUN)}/rerun`, {params: resumeParams || {}, from_failure: true});
    if (reply.ok) location.href = `/ui/runs/${encodeURIComponent(reply.data.run_id)}`;
    else $("resume-msg").textContent = Plankton.message(reply.data);
  });
}

let planned = null;
$("rerun-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("err-overrides").textContent = "";
  let params;
  try { params = overrides(); } catch (e) { $("err-overrides").textContent = e.message; return; }
  const reply = await Plankton.call("POST", `/runs/${encodeURIComponent(RUN)}/rerun?dry_run=true`, {params});
  if (!reply.ok) { $("err-overrides").textContent = Plankton.message(reply.data); return; }
  planned = params;
  const plan = reply.data;
  const changed = plan.changed || [];
  $("rerun-summary").textContent = `${changed.length} task(s) change, ${plan.unchanged} unchanged` +
    (plan.code_changed ? `; code version ${plan.code_changed.recorded} → ${plan.code_changed.today}` : "") + ".";
  $("rerun-diff").tBodies[0].innerHTML = changed.map(c =>
    `<tr><td><a href="#task-${esc(c.id)}" data-open="${esc(c.id)}">${esc(c.name)}#${esc(c.id)}</a></td>` +
    `<td>${c.params_changed ? "changed" : "same (a child changed)"}</td>` +
    `<td><code class="hash">${esc(c.param_hash.old.slice(0, 12))}</code> → <code class="hash">${esc(c.param_hash.new.slice(0, 12))}</code></td></tr>`).join("");
  $("rerun-plan").hidden = false;
});

$("rerun-cancel").addEventListener("click", () => { $("rerun-plan").hidden = true; planned = null; });

$("rerun-confirm").addEventListener("click", async () => {
  const reply = await Plankton.call("POST", `/runs/${encodeURIComponent(RUN)}/rerun`, {params: planned || {}});
  if (reply.ok) location.href = `/ui/runs/${encodeURIComponent(reply.data.run_id)}`;
  else $("err-overrides").textContent = Plankton.message(reply.data);
});

window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#task-")) revealTask(location.hash.slice(6));
});

poll().then(() => {
  if (location.hash.startsWith("#task-")) revealTask(location.hash.slice(6));
  tailLog();
});
setInterval(() => { if (run && !ENDED.has(run.status)) renderTimes(); }, 1000);
