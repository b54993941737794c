/* Plankton console: shared helpers, the live refresh of list pages and the DAG forms.
   Hand-written, no build step, nothing loaded from another host. */
"use strict";

const Plankton = {
  /* POST/GET JSON to this server; resolves to {ok, status, data}. */
  async call(method, url, body) {
    const init = {method, headers: {"Accept": "application/json"}};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let reply;
    try {
      reply = await fetch(url, init);
    } catch (e) {
      return {ok: false, status: 0, data: {detail: "the Plankton API cannot be reached"}};
    }
    let data = null;
    try { data = await reply.json(); } catch (e) { data = {detail: reply.statusText}; }
    if (reply.status === 401) { location.href = "/ui/login?next=" + encodeURIComponent(location.pathname); }
    return {ok: reply.ok, status: reply.status, data};
  },

  /* The one-sentence message of an error reply. */
  message(data) {
    if (!data) return "failed";
    if (typeof data.detail === "string") return data.detail;
    if (Array.isArray(data.detail)) return data.detail.map(e => e.msg).join("; ");
    return JSON.stringify(data);
  },

  /* Show a 422's messages beside the fields they name (loc's last part), the rest at the end. */
  showErrors(form, data) {
    form.querySelectorAll("[data-error]").forEach(el => { el.textContent = ""; });
    const items = Array.isArray(data && data.detail) ? data.detail : [{loc: [], msg: this.message(data)}];
    for (const item of items) {
      const loc = item.loc || [];
      let name = loc.length >= 3 && loc[1] === "params" ? String(loc[2]) : (loc.length === 2 ? String(loc[1]) : "");
      let el = name ? form.querySelector(`[data-error="${CSS.escape(name)}"]`) : null;
      if (!el) el = form.querySelector('[data-error=""]');
      if (el) el.textContent = (el.textContent ? el.textContent + "; " : "") + item.msg;
    }
  },

  clock(iso) {
    if (!iso) return "";
    return iso.replace("T", " ").replace(/\.\d+/, "").replace(/(\+00:00|Z)$/, "");
  },

  duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "";
    if (seconds < 10) return seconds.toFixed(2) + " s";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    const m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
    if (m < 60) return `${m} m ${String(s).padStart(2, "0")} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} m`;
  },
};

/* A param typed in a form as the JSON value the API takes: text params as typed; others
   parsed as JSON when they parse (3, true, [1, 2]), else sent as typed so that the API
   answers with its own message ("expected int, got str"). */
function formValue(input) {
  const text = input.value;
  if (input.dataset.kind === "text") return text;
  try { return JSON.parse(text); } catch (e) { return text; }
}

function wireTrigger(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const params = {};
    form.querySelectorAll("[data-param]").forEach(input => {
      // left empty where the default shows empty (None or ""): the API applies the default
      if (input.value === "" && input.defaultValue === "" && input.dataset.required !== "yes") return;
      params[input.dataset.param] = formValue(input);
    });
    const body = {params};
    form.querySelectorAll("[data-window]").forEach(input => {
      if (input.value.trim()) body[input.dataset.window] = input.value.trim();
    });
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const reply = await Plankton.call("POST", `/dags/${encodeURIComponent(form.dataset.dag)}/runs`, body);
    button.disabled = false;
    if (reply.ok) { location.href = `/ui/runs/${encodeURIComponent(reply.data.run_id)}`; return; }
    Plankton.showErrors(form, reply.data);
  });
}

function wireBackfill(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {since: form.since.value, to: form.to.value, force: form.force.checked};
    const reply = await Plankton.call("POST", `/ui/dags/${encodeURIComponent(form.dataset.dag)}/backfill`, body);
    form.querySelectorAll("[data-error]").forEach(el => { el.textContent = ""; });
    const msg = form.querySelector("[data-msg]");
    if (reply.ok) {
      msg.innerHTML = `backfill of ${reply.data.intervals} interval(s) started: <a href="/?dag=${encodeURIComponent(form.dataset.dag)}">see its runs</a>`;
    } else {
      msg.textContent = "";
      Plankton.showErrors(form, reply.data);
    }
  });
}

document.querySelectorAll("form.trigger").forEach(wireTrigger);
document.querySelectorAll("form.backfill").forEach(wireBackfill);

/* List pages with live data reload themselves every few seconds, unless a form is in use. */
if (document.body.dataset.live === "yes") {
  setInterval(() => {
    const active = document.activeElement;
    if (active && ["INPUT", "TEXTAREA", "SELECT"].includes(active.tagName)) return;
    location.reload();
  }, 3000);
}
