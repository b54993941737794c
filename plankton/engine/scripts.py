"""All of Plankton's Lua, in one place: every Redis write that must be atomic is a script here.

The task state machine comes first: every state transition of a task is one atomic
compare-and-set. Each script checks the attempt number it was given against the task's hash
(fencing): a write from a superseded attempt (lost lease, restart, cancel) returns FENCED and
changes nothing. Emits carry a per-attempt sequence number, so a redis-py retry of a timed-out
call cannot append twice. All keys a script touches belong to one run and share its
``{run_id}`` hash tag; KEYS[1] is the run hash, task hashes are derived from its prefix, and
every other key (a results channel, an RQ job) is passed as a further KEYS argument built by
``keys`` (or ``transport`` for RQ's own keys).

Task states: pending (waits for its children to start) -> ready -> queued -> running ->
succeeded | failed | retrying (-> ready) | cancelled; ``skipped`` (and reused ``succeeded``)
tasks are written so when the run is created (``prefill``) and no script moves them.

Contents, in order:

- ``_METRICS``, ``_PRELUDE``: Lua helpers prepended to every transition script.
- Transitions (Python face: ``transitions.Transitions``; ENQUEUE and FORGET: ``transport``
  and the worker): START, ENQUEUE, FORGET, EMIT, FINISH, ACK, FAIL, RENEW, REAP, CANCEL,
  SETTLE.
- Scheduler leadership (``leader``): LEADER_ACQUIRE_OR_RENEW, LEADER_RELEASE,
  FENCE_CHECK, FENCED_PRELUDE (what ``leader.fenced_call`` wraps).
- Cron runs (``writing.FencedPipe``, ``scheduler/cron.py``): CREATE_RUN_FENCED, CRON_ADVANCE.
- Webhook outbox (``alerts``): OUTBOX_ENQUEUE, OUTBOX_CLAIM, OUTBOX_RECORD.

To add a script: put it in the section of its subject as an UPPER_CASE module constant, with a
``#:`` comment above it naming its caller, its KEYS and ARGV and its replies; a transition
starts with ``_PRELUDE +`` to get ``tkey``, ``now_ms``, ``run_live``, ``fail_task`` and the
metric helpers. Register it once where it is called (``conn.register_script(scripts.NAME)``,
as ``Transitions.__init__`` does). Key names come in as KEYS built by ``keys``; a new key or
hash field also goes in the schema table of ``keys``. To add to an existing transition (a
field, a counter), keep the addition a few self-contained lines so parallel changes merge.
"""

from __future__ import annotations

from plankton import keys
from plankton.engine.counters import RUN_BUCKETS, TASK_BUCKETS, lua_buckets

#: Metrics (plankton/engine/counters.py): counters and histogram buckets HINCRBY'd into one
#: hash, in the same script as the transition they count; tasks queued and not started in one zset
#: per queue (queue latency). Those keys are global on one Redis; on a Redis Cluster they are
#: the copies of the run's slot, tagged with the run hash's ``mtag`` (``slots``), so that the
#: script never leaves its run's slot. ``mkeys()`` finds them once per call, when counting.
_METRICS = r"""
local MKEY, WQUEUES = nil, nil
local function mkeys()
  if not MKEY then
    local tag = redis.call('HGET', RUNKEY, 'mtag')
    local sfx = tag and (':{' .. tag .. '}') or ''
    MKEY, WQUEUES = '%(metrics)s' .. sfx, '%(waiting_queues)s' .. sfx
  end
  return MKEY
end
local TASK_BUCKETS, RUN_BUCKETS = %(task_buckets)s, %(run_buckets)s
local function mcount(name, a, b)
  local f = name .. '\31' .. a
  if b then f = f .. '\31' .. b end
  redis.call('HINCRBY', mkeys(), f, 1)
end
local function mobserve(name, bounds, secs, a, b)
  local i = #bounds + 1
  for j = 1, #bounds do if secs <= bounds[j] then i = j; break end end
  redis.call('HINCRBY', mkeys(), name .. '_b\31' .. a .. '\31' .. b .. '\31' .. i, 1)
  redis.call('HINCRBYFLOAT', MKEY, name .. '_sum\31' .. a .. '\31' .. b, secs)
end
-- A task reached a final state; ``ran``: observe its attempt's duration too.
local function task_ended(k, state, now, ran)
  local f = redis.call('HMGET', k, 'family', 'started_at')
  mcount('tasks_ended', f[1] or '?', state)
  if ran and f[2] then
    mobserve('task_seconds', TASK_BUCKETS, (now - tonumber(f[2])) / 1000, f[1] or '?', state)
  end
end
local function run_ended(status, now)
  local r = redis.call('HMGET', RUNKEY, 'dag', 'started_at', 'submitted_at')
  local from = tonumber(r[2] or r[3] or now) or now
  mcount('runs_ended', r[1] or '?', status)
  mobserve('run_seconds', RUN_BUCKETS, (now - from) / 1000, r[1] or '?', status)
end
-- Tasks (ARGV[first], ARGV[first + 2], ...) of one queue were queued at ``now``.
local function waiting_add(queue, now, first)
  local scored = {}
  for i = first, #ARGV, 2 do
    table.insert(scored, now)
    table.insert(scored, RUN_ID .. '/' .. ARGV[i])
  end
  mkeys()
  redis.call('ZADD', WQUEUES .. ':' .. queue, unpack(scored))
  redis.call('SADD', WQUEUES, queue)
end
local function waiting_del(t, queue)
  if queue then mkeys(); redis.call('ZREM', WQUEUES .. ':' .. queue, RUN_ID .. '/' .. t) end
end
""" % {
    "metrics": keys.METRICS,
    "waiting_queues": keys.WAITING_QUEUES,
    "task_buckets": lua_buckets(TASK_BUCKETS),
    "run_buckets": lua_buckets(RUN_BUCKETS),
}

#: Shared Lua helpers, prepended to every script.
_PRELUDE = (
    r"""
local RUNKEY = KEYS[1]
local P = string.sub(RUNKEY, 1, #RUNKEY - #'%(run)s')
local RUN_ID = string.match(RUNKEY, '{(.*)}')
local function tkey(t) return P .. '%(task)s' .. t end
local K_LEASES, K_RETRY, K_DONE = P .. '%(leases)s', P .. '%(retry)s', P .. '%(done)s'
local K_READY, K_ENQ, K_CHG = P .. '%(ready)s', P .. '%(enq)s', P .. '%(chg)s'
"""
    % {
        "run": keys.RUN_SFX,
        "task": keys.TASK_SFX,
        "leases": keys.LEASES_SFX,
        "retry": keys.RETRY_SFX,
        "done": keys.DONE_SFX,
        "ready": keys.READY_SFX,
        "enq": keys.ENQ_SFX,
        "chg": keys.CHANGES_SFX,
    }
    + r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
    + _METRICS
    + r"""
-- Read once per script call (RENEW asks it per task it renews); only end_run changes it.
local LIVE = nil
local function run_live()
  if LIVE == nil then
    local s = redis.call('HGET', RUNKEY, 'status')
    LIVE = s == 'queued' or s == 'running'
  end
  return LIVE
end
-- A worker names the attempt it holds 'N.TOKEN': N the attempt number, TOKEN the claim token
-- START wrote in the task's 'claim'. After a Redis rollback re-delivers a job whose claim was
-- lost, the same attempt can be claimed again while its first holder still runs it; only the
-- holder of the current claim may write. A bare 'N' (tools, tests) is checked by number only.
-- Returns the number and the token (nil for a bare number).
local function fence(a)
  local n, tok = string.match(a, '^(%d+)%.(%w+)$')
  if n then return n, tok end
  return a, nil
end
-- The fence every write of a running attempt passes (EMIT, FINISH, ACK, RENEW): the run is
-- live, task ``t`` is running attempt ``held`` ('N' or 'N.TOKEN') and, with a token, the
-- holder's claim is the current one. ``...``: more task-hash fields read in the same HMGET
-- (from st[4] on). Returns st and the attempt number; or nil, the number and st after
-- counting a fenced write of ``op`` (none if ``op`` is nil).
local function holding(t, held, op, ...)
  local a, tok = fence(held)
  local st = redis.call('HMGET', tkey(t), 'state', 'attempt', 'claim', ...)
  if not run_live() or st[1] ~= 'running' or st[2] ~= a or (tok and st[3] ~= tok) then
    if op then mcount('fenced_writes', op) end
    return nil, a, st
  end
  return st, a
end
-- Change log for delta reads (reading.changes): one version per script call that changes
-- something (the run's 'ver'), and every task it changed scored with it in P..'chg'.
local VER = nil
local function bump()
  if not VER then VER = redis.call('HINCRBY', RUNKEY, 'ver', 1) end
  return VER
end
local function changed(t) redis.call('ZADD', K_CHG, bump(), t) end
local function changed_all(ts)  -- one ZADD for a batch of tasks
  if #ts == 0 then return end
  local v, args = bump(), {}
  for _, t in ipairs(ts) do args[#args + 1] = v; args[#args + 1] = t end
  redis.call('ZADD', K_CHG, unpack(args))
end
local function end_run(status, err, result, now)
  bump()
  LIVE = false
  redis.call('HSET', RUNKEY, 'status', status, 'ended_at', now)
  if err then redis.call('HSET', RUNKEY, 'error', err) end
  if result then redis.call('HSET', RUNKEY, 'result', result) end
  redis.call('RPUSH', K_DONE, status)
  redis.call('PEXPIRE', K_DONE, 86400000)
  run_ended(status, now)
end
-- A running consumer that may have read values of a failed attempt (the attempt appended
-- some: its 'seq') restarts, and so on up the tree. Readers read the channel without a
-- script (channel.Reader), so Redis cannot tell whether it did: it assumes so.
local function restart_consumers(child, cattempt)
  while true do
    local cs = redis.call('HMGET', tkey(child), 'parent', 'seq')
    local parent = cs[1]
    if not parent or parent == '' then return end
    local ps = redis.call('HMGET', tkey(parent), 'state', 'attempt')
    if tonumber(cs[2] or '0') == 0 or ps[1] ~= 'running' then return end
    redis.call('HSET', tkey(parent), 'state', 'pending', 'ch_read', 0)
    changed(parent)
    redis.call('HINCRBY', tkey(parent), 'attempt', 1)
    redis.call('HINCRBY', tkey(parent), 'restarts', 1)
    redis.call('HINCRBY', tkey(parent), 'n_started', -1)
    redis.call('HSET', tkey(child), 'counted', '0')
    redis.call('ZREM', K_LEASES, parent)
    child, cattempt = parent, ps[2]
  end
end
-- One attempt failed: retry it or fail it and its ancestors for good.
local function fail_task(t, attempt, kind, err, backoff, max_lost, now)
  local k = tkey(t)
  local st = redis.call('HMGET', k, 'state', 'attempt', 'retries', 'parent', 'name', 'family',
    'queue')
  if st[2] ~= attempt or (st[1] ~= 'running' and st[1] ~= 'queued') then
    mcount('fenced_writes', 'fail')
    return 'FENCED'
  end
  if st[1] == 'queued' then waiting_del(t, st[7]) end
  if kind == 'lost' then mcount('lost_leases', st[6] or '?') end
  changed(t)
  redis.call('ZREM', K_LEASES, t)
  redis.call('HSET', k, 'error', err, 'ended_at', now)
  if not run_live() then
    redis.call('HSET', k, 'state', 'cancelled')
    task_ended(k, 'cancelled', now, false)
    return 'ENDED'
  end
  local retry
  if kind == 'handback' then
    retry = true
  elseif kind == 'refused' or kind == 'fatal' then
    redis.call('HINCRBY', k, 'fails', 1)
    retry = false
  elseif kind == 'lost' then
    retry = redis.call('HINCRBY', k, 'lost', 1) <= tonumber(max_lost)
  else
    retry = redis.call('HINCRBY', k, 'fails', 1) <= tonumber(st[3] or '0')
  end
  if retry then
    redis.call('HSET', k, 'state', 'retrying')
    redis.call('HINCRBY', k, 'attempt', 1)
    redis.call('ZADD', K_RETRY, now + tonumber(backoff), t)
    restart_consumers(t, attempt)
    mcount('task_retries', st[6] or '?', kind)
    return 'RETRY'
  end
  redis.call('HSET', k, 'state', 'failed')
  task_ended(k, 'failed', now, st[1] == 'running')
  local child, p = st[5], st[4]
  while p and p ~= '' do
    local pk = tkey(p)
    changed(p)
    redis.call('HSET', pk, 'state', 'failed', 'ended_at', now,
      'error', 'UpstreamFailed: child task ' .. child .. ' failed: ' .. err, 'upstream', child)
    task_ended(pk, 'failed', now, false)
    redis.call('HINCRBY', pk, 'attempt', 1)
    redis.call('ZREM', K_LEASES, p)
    child = redis.call('HGET', pk, 'name')
    p = redis.call('HGET', pk, 'parent')
  end
  end_run('failed', 'task ' .. st[5] .. ' (' .. t .. ') failed: ' .. err, nil, now)
  return 'FAILED'
end
-- An attempt whose own acknowledged writes are gone (Redis rolled back to an older
-- snapshot, or a failover lost them) cannot go on: what it holds in memory (values sent,
-- values read) no longer matches Redis. It is handed back for an immediate retry, which
-- restarts its consumer if that read its values (fail_task).
local function rolled_back(t, a, what)
  return fail_task(t, a, 'handback', 'attempt ' .. a .. ' of task ' .. t .. ': Redis lost '
    .. what .. ' (rolled back to an older snapshot?); retried', 0, 0, now_ms())
end
"""
)

#: Worker: claim a batch of queued attempts. ARGV: worker, lease_ms, local budget, queues
#: (comma-separated, with a leading and trailing comma), host, alone (1: claim leaves'
#: parents too), claim token (unique per call: written as each claimed task's 'claim'; the
#: worker then names the attempt 'N.TOKEN' in EMIT, FINISH, ACK, FAIL and RENEW, see
#: ``fence``), then (task, attempt)*.
#: A parent released by the start of a task that has children itself is claimed right here
#: by the same worker when its queue is one the worker serves and the local budget allows
#: (the worker "releases its parent itself": no trip through RQ); otherwise it is returned to
#: be enqueued. Returns {claimed, released}: claimed rows {task, attempt, family, params, parent,
#: n_children, timeout, name, queue}; released rows {parent, attempt, queue}.
START = (
    _PRELUDE
    + r"""
local now = now_ms()
local live = run_live()
local worker, lease, budget, queues = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local claimed, released = {}, {}
local function claim(t, a)
  local k = tkey(t)
  redis.call('HSET', k, 'state', 'running', 'started_at', now, 'worker', worker,
    'host', ARGV[5], 'attempts', a, 'seq', 0, 'ch_read', 0, 'emitted', 0, 'consumed', 0,
    'claim', ARGV[7])
  redis.call('ZADD', K_LEASES, now + lease, t)
  local f = redis.call('HMGET', k, 'family', 'params', 'parent', 'n_children', 'timeout',
    'name', 'queue', 'counted')
  waiting_del(t, f[7])
  table.insert(claimed, {t, a, f[1], f[2], f[3], f[4], f[5], f[6], f[7]})
  if f[3] == '' or f[8] == '1' then return end
  redis.call('HSET', k, 'counted', '1')
  local pk = tkey(f[3])
  local n = redis.call('HINCRBY', pk, 'n_started', 1)
  local ps = redis.call('HMGET', pk, 'state', 'n_children', 'attempt', 'queue')
  if n < tonumber(ps[2]) or ps[1] ~= 'pending' then return end
  -- A parent task always releases its own parent here (a tall tree starts in one script);
  -- a leaf's parent only when ARGV[6] == '1' (the default, PLANKTON_CLAIM_PARENTS=2, or a
  -- worker alone): the consumer then streams from its producer at once, keeping the
  -- channel bounded, even while every other worker is busy.
  if budget > 0 and (tonumber(f[4]) > 0 or ARGV[6] == '1')
    and string.find(queues, ',' .. ps[4] .. ',', 1, true) then
    budget = budget - 1
    return {f[3], ps[3]}
  end
  redis.call('HSET', pk, 'state', 'ready')
  redis.call('ZADD', K_READY, now, f[3])
  table.insert(released, {f[3], ps[3], ps[4]})
end
if live then
  for i = 8, #ARGV, 2 do
    local t, a = ARGV[i], ARGV[i + 1]
    local st = redis.call('HMGET', tkey(t), 'state', 'attempt')
    if st[1] == 'queued' and st[2] == a then
      local up = claim(t, a)
      while up do up = claim(up[1], up[2]) end
    end
  end
end
if #claimed > 0 and redis.call('HGET', RUNKEY, 'status') == 'queued' then
  bump()
  redis.call('HSET', RUNKEY, 'status', 'running', 'started_at', now)
  mcount('runs_started', redis.call('HGET', RUNKEY, 'dag') or '?')
end
local touched = {}
for _, row in ipairs(claimed) do touched[#touched + 1] = row[1] end
for _, row in ipairs(released) do touched[#touched + 1] = row[1] end
changed_all(touched)
return {claimed, released}
"""
)

#: Scheduler or worker: put ready attempts on an RQ queue in one job, atomically.
#: KEYS[2] rq job hash, KEYS[3] rq queue list, KEYS[4] rq queues set.
#: ARGV: job id, queue key, n job fields, field/value pairs..., then (task, attempt)*.
ENQUEUE = (
    _PRELUDE
    + r"""
local nf = tonumber(ARGV[3])
local first = 4 + 2 * nf
local bad = {}
for i = first, #ARGV, 2 do
  local st = redis.call('HMGET', tkey(ARGV[i]), 'state', 'attempt')
  if st[1] ~= 'ready' or st[2] ~= ARGV[i + 1] then table.insert(bad, ARGV[i]) end
end
if #bad > 0 then return {'BAD', bad} end
if not run_live() then return {'ENDED', {}} end
local now = now_ms()
local touched = {}
for i = first, #ARGV, 2 do
  redis.call('HSET', tkey(ARGV[i]), 'state', 'queued', 'queued_at', now)
  touched[#touched + 1] = ARGV[i]
  redis.call('ZREM', K_READY, ARGV[i])
  redis.call('HINCRBY', K_ENQ, ARGV[i] .. ':' .. ARGV[i + 1], 1)
end
waiting_add(redis.call('HGET', tkey(ARGV[first]), 'queue'), now, first)  -- one job, one queue
changed_all(touched)
local fields = {}
for i = 4, first - 1 do table.insert(fields, ARGV[i]) end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[2])
return {'OK', {}}
"""
)

#: Worker: a job's batch is over; drop the job unless an attempt it names is still queued.
#: KEYS[2] rq job hash, KEYS[3] the queue's intermediate list, KEYS[4] the queue list.
#: ARGV: job id, then (task, attempt)*. An attempt still queued at the end of its batch was
#: never claimed, or its claim was lost (Redis rolled back to a snapshot taken before the
#: claim, which also put the job back on its queue): the job then stays, and goes back on
#: its queue if it is on neither list, or its tasks would wait for ever. Returns 1 if kept.
FORGET = (
    _PRELUDE
    + r"""
local pending = false
if run_live() then
  for i = 2, #ARGV, 2 do
    local st = redis.call('HMGET', tkey(ARGV[i]), 'state', 'attempt')
    if st[1] == 'queued' and st[2] == ARGV[i + 1] then pending = true end
  end
end
local removed = redis.call('LREM', KEYS[3], 1, ARGV[1])
if not pending then
  redis.call('DEL', KEYS[2])
  return 0
end
if removed > 0 or not redis.call('LPOS', KEYS[4], ARGV[1]) then
  redis.call('RPUSH', KEYS[4], ARGV[1])
end
return 1
"""
)

#: How long (ms) a consumer released to RQ may wait for a free worker once its producers
#: emit, before a producer's worker starts it itself (``Executor.adopt``): an idle worker
#: takes it from RQ in ~1 ms; one still queued after this means every worker is busy.
ADOPT_AFTER_MS = 50

#: Worker: append a batch of values to the parent's channel.
#: KEYS[2] the parent's channel (``keys.channel``; unused for a root task).
#: ARGV: task, attempt, seq, n, blob, cap, adopt_after_ms ('': off). Returns OK | DUP | FULL |
#: FENCED, or, with adopt_after_ms, 'QUEUED:attempt:queue' when the parent has waited that long
#: in RQ (released, not started): the producer's worker may start it (nothing was appended).
#: Until then the cap holds for a queued parent too (FULL), as for a running one.
EMIT = (
    _PRELUDE
    + r"""
local t, seq, n = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local st, a = holding(t, ARGV[2], 'emit', 'seq', 'parent')
if not st then return 'FENCED' end
local k = tkey(t)
if seq <= tonumber(st[4] or '0') then return 'DUP' end
if seq > tonumber(st[4] or '0') + 1 then
  rolled_back(t, a, 'batches it had emitted')
  return 'FENCED'
end
local parent = st[5]
if parent ~= '' then
  local pk = tkey(parent)
  local ps = redis.call('HMGET', pk, 'state', 'produced', 'ch_read', 'attempt', 'queue')
  local running = ps[1] == 'running'
  local adopt = ps[1] == 'queued' and ARGV[7] ~= ''
  if running or adopt then
    local unread = tonumber(ps[2] or '0') - tonumber(ps[3] or '0')
    local full = unread > 0 and unread + n > tonumber(ARGV[6])
    -- a consumer waits in RQ ADOPT_AFTER_MS at most, its producers up to the cap meanwhile
    if adopt and now_ms() - tonumber(redis.call('HGET', pk, 'queued_at') or '0')
                 >= tonumber(ARGV[7]) then
      return 'QUEUED:' .. ps[4] .. ':' .. (ps[5] or 'default')
    end
    if full then return 'FULL' end
  end
  redis.call('XADD', KEYS[2], '*', 'c', t, 'a', a, 'k', 'v', 'n', n, 'v', ARGV[5])
  redis.call('HINCRBY', pk, 'produced', n)
end
redis.call('HSET', k, 'seq', seq)
redis.call('HINCRBY', k, 'emitted', n)
changed(t)
return 'OK'
"""
)

#: Worker: the attempt succeeded. KEYS[2] the parent's channel (unused for a root task),
#: KEYS[3] the task's own channel (dropped). ARGV: task, attempt, seq, n, blob, result, consumed,
#: took (msgpack [child, attempt, ...] of the child attempts whose values it read, or '').
#: A consumer reads its channel without a script (channel.Reader), so its consumption is
#: validated here: every child attempt it took values from must still be current, else the
#: attempt is handed back for an immediate retry (FENCED).
FINISH = (
    _PRELUDE
    + r"""
local t, seq, n = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local st, a = holding(t, ARGV[2], 'finish', 'seq', 'parent')
if not st then return 'FENCED' end
local k = tkey(t)
if seq ~= tonumber(st[4] or '0') + 1 then
  rolled_back(t, a, 'batches it had emitted')
  return 'FENCED'
end
if ARGV[8] and ARGV[8] ~= '' then
  local took = cmsgpack.unpack(ARGV[8])
  for i = 1, #took, 2 do
    if redis.call('HGET', tkey(took[i]), 'attempt') ~= tostring(took[i + 1]) then
      fail_task(t, a, 'handback', 'attempt ' .. a .. ' of task ' .. t .. ' read values of '
        .. 'attempt ' .. took[i + 1] .. ' of child ' .. took[i] .. ', superseded; retried',
        0, 0, now_ms())
      return 'FENCED'
    end
  end
end
local now = now_ms()
local parent = st[5]
if n > 0 and seq > tonumber(st[4] or '0') then
  if parent ~= '' then
    redis.call('XADD', KEYS[2], '*', 'c', t, 'a', a, 'k', 'v', 'n', n, 'v', ARGV[5])
    redis.call('HINCRBY', tkey(parent), 'produced', n)
  end
  redis.call('HINCRBY', k, 'emitted', n)
  redis.call('HSET', k, 'seq', seq)
end
redis.call('HSET', k, 'state', 'succeeded', 'ended_at', now, 'result', ARGV[6],
  'consumed', ARGV[7])
task_ended(k, 'succeeded', now, true)
changed(t)
redis.call('ZREM', K_LEASES, t)
redis.call('DEL', KEYS[3])
if parent ~= '' then
  local emitted = redis.call('HGET', k, 'emitted')
  redis.call('XADD', KEYS[2], '*', 'c', t, 'a', a, 'k', 'end', 'n', emitted)
  redis.call('HINCRBY', tkey(parent), 'n_done', 1)
else
  end_run('succeeded', nil, ARGV[6], now)
end
return 'OK'
"""
)

#: Worker (channel.Reader), sent in one pipeline with the reader's XREAD of its channel:
#: checks the reading attempt is current and records its progress. ARGV: parent, attempt,
#: ch_read (values of the channel it has passed: the bound EMIT enforces), consumed (values
#: of current attempts it took), first ('1': also return the children whose attempt is not
#: 1). Returns {'OK', {child, attempt, ...}} or {'FENCED', state, error, upstream}
#: (upstream: the failed child's name, if that is why).
ACK = (
    _PRELUDE
    + r"""
local t = ARGV[1]
local k = tkey(t)
local st, _, was = holding(t, ARGV[2], 'read', 'consumed')
if not st then
  local why = redis.call('HMGET', k, 'error', 'upstream')
  return {'FENCED', was[1] or '', why[1] or '', why[2] or ''}
end
redis.call('HSET', k, 'ch_read', ARGV[3])
if ARGV[4] ~= (st[4] or '0') then
  redis.call('HSET', k, 'consumed', ARGV[4])
  changed(t)
end
local att = {}
if ARGV[5] == '1' then
  for _, c in ipairs(cmsgpack.unpack(redis.call('HGET', k, 'children'))) do
    local ca = redis.call('HGET', tkey(c), 'attempt')
    if ca ~= '1' then att[#att + 1] = c; att[#att + 1] = ca end
  end
end
return {'OK', att}
"""
)

#: Worker: an attempt raised or timed out. ARGV: task, attempt, kind, error, backoff_ms,
#: max_lost. Returns RETRY | FAILED | FENCED | ENDED.
FAIL = (
    _PRELUDE
    + r"""
local a, tok = fence(ARGV[2])
if tok and redis.call('HGET', tkey(ARGV[1]), 'claim') ~= tok then
  mcount('fenced_writes', 'fail')
  return 'FENCED'
end
return fail_task(ARGV[1], a, ARGV[3], ARGV[4], ARGV[5], ARGV[6], now_ms())
"""
)

#: Worker heartbeat: extend the leases of attempts still current. ARGV: lease_ms,
#: (task, attempt)*. Returns the tasks whose attempt is no longer current.
RENEW = (
    _PRELUDE
    + r"""
local now = now_ms()
local fenced = {}
for i = 2, #ARGV, 2 do
  if holding(ARGV[i], ARGV[i + 1], nil) then
    redis.call('ZADD', K_LEASES, now + tonumber(ARGV[1]), ARGV[i])
  else
    table.insert(fenced, ARGV[i])
  end
end
return fenced
"""
)

#: Scheduler: declare lost every attempt whose lease expired, and make due retries ready.
#: ARGV: backoff_ms, max_lost, leases ('0': skip the leases, a grace after Redis came back).
#: Returns {lost tasks, promoted tasks}.
REAP = (
    _PRELUDE
    + r"""
local now = now_ms()
local lost, promoted = {}, {}
local expired = {}
if ARGV[3] ~= '0' then expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now) end
for _, t in ipairs(expired) do
  local a = redis.call('HGET', tkey(t), 'attempt')
  if a then  -- a lease naming no task (lost or forged records) is just dropped
    local r = fail_task(t, a, 'lost', 'attempt ' .. a .. ' lost: its worker stopped '
      .. 'renewing the lease (worker ' .. (redis.call('HGET', tkey(t), 'worker') or '?')
      .. ')', ARGV[1], ARGV[2], now)
    table.insert(lost, {t, r})
  end
  redis.call('ZREM', K_LEASES, t)
end
for _, t in ipairs(redis.call('ZRANGEBYSCORE', K_RETRY, '-inf', now)) do
  redis.call('ZREM', K_RETRY, t)
  if redis.call('HGET', tkey(t), 'state') == 'retrying' and run_live() then
    redis.call('HSET', tkey(t), 'state', 'ready')
    changed(t)
    redis.call('ZADD', K_READY, now, t)
    table.insert(promoted, t)
  end
end
return {lost, promoted}
"""
)

#: Anyone: cancel a live run. Returns the run's status after the call.
CANCEL = (
    _PRELUDE
    + r"""
if run_live() then end_run('cancelled', ARGV[1], nil, now_ms()) end
return redis.call('HGET', RUNKEY, 'status')
"""
)

#: Scheduler janitor: mark the tasks of an ended run that never finished as cancelled.
#: ARGV: task ids. Returns how many changed.
SETTLE = (
    _PRELUDE
    + r"""
local n = 0
for i = 1, #ARGV do
  local k = tkey(ARGV[i])
  local s = redis.call('HMGET', k, 'state', 'queue')
  if s[1] ~= 'succeeded' and s[1] ~= 'failed' and s[1] ~= 'cancelled' and s[1] ~= 'skipped'
  then
    redis.call('HSET', k, 'state', 'cancelled')
    if s[1] == 'queued' then waiting_del(ARGV[i], s[2]) end
    task_ended(k, 'cancelled', 0, false)
    changed(ARGV[i])
    n = n + 1
  end
end
return n
"""
)


# ---- Scheduler leadership (leader.py): a lease plus a fencing epoch -----------------------------

#: KEYS: leader, epoch. ARGV: token, lease ms. Returns the epoch if ``token`` leads, else nil.
#: A holder renews (the epoch is unchanged); a free lease is taken and the epoch INCRed in the
#: same script, so no other scheduler can take it in between.
LEADER_ACQUIRE_OR_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  local epoch = redis.call('GET', KEYS[2])
  if epoch then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(epoch)
  end
elseif holder then
  return false
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""

#: KEYS: leader. ARGV: token. Deletes the lease only if ``token`` holds it; returns 1 or 0.
LEADER_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Scheduler write scripts: embedded at the top. Defines ``plankton_fence(key, epoch)``
#: which returns an error reply starting with ``FENCED`` when the epoch stored at ``key``
#: (``keys.LEADER_EPOCH``) is not ``epoch``, else nil. Use it as the script's first statement:
#:
#:     local fenced = plankton_fence(KEYS[1], ARGV[1]); if fenced then return fenced end
#:
#: redis-py raises the error reply as ``redis.ResponseError("FENCED ...")``.
FENCE_CHECK = """
local function plankton_fence(epoch_key, epoch)
  local current = redis.call('GET', epoch_key)
  if current ~= tostring(epoch) then
    return redis.error_reply('FENCED scheduler epoch ' .. tostring(epoch) ..
                             ' superseded by ' .. tostring(current))
  end
  return nil
end
"""

#: Wraps a body for ``leader.fenced_call``: the epoch key and epoch are taken off the front of KEYS
#: and ARGV, so the body sees its own KEYS[1] and ARGV[1] unchanged.
FENCED_PRELUDE = (
    FENCE_CHECK
    + """
local plankton_epoch_key = table.remove(KEYS, 1)
local plankton_epoch = table.remove(ARGV, 1)
local plankton_fenced = plankton_fence(plankton_epoch_key, plankton_epoch)
if plankton_fenced then return plankton_fenced end
"""
)


# ---- Cron runs (writing.FencedPipe, scheduler/cron.py), fenced by the leader epoch ---------------

#: Scheduler (writing.FencedPipe): the writes creating a cron run, fenced. KEYS[1] leader epoch,
#: KEYS[2] the run hash; ARGV[1] the writer's epoch, then (key, n, field, value...)*. Writes
#: nothing (returns 0) if the epoch moved on or the run already exists, so a paused old leader can
#: neither create a fire time twice nor overwrite a run the new leader started.
CREATE_RUN_FENCED = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local i = 2
while i <= #ARGV do
  local key, n = ARGV[i], tonumber(ARGV[i + 1])
  local op = ARGV[i + 2]
  local args = {}
  for j = i + 3, i + 2 + n do table.insert(args, ARGV[j]) end
  redis.call(op, key, unpack(args))
  i = i + 3 + n
end
return 1
"""

#: Scheduler (scheduler/cron.py): KEYS: leader epoch, cron hash. ARGV: epoch, fire (epoch s). Moves
#: last_fire forward only.
CRON_ADVANCE = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local last = tonumber(redis.call('HGET', KEYS[2], 'last_fire') or '0')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[2], 'last_fire', ARGV[2]) end
return 1
"""


# ---- Webhook outbox (alerts.py) -----------------------------------------------------------------

#: Alerts sender, run through ``leader.fenced_call``. KEYS: run hash, alerts hash, outbox. ARGV:
#: now ms, then the outbox members. Records the run end's deliveries once: returns 1 the first
#: time, 0 after (the run's ``alerted`` marker is set).
OUTBOX_ENQUEUE = r"""
if redis.call('HSETNX', KEYS[1], 'alerted', ARGV[1]) == 0 then return 0 end
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[3], 'NX', ARGV[1], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], 'pending')
end
return 1
"""

#: Alerts sender, through ``leader.fenced_call``. KEYS: outbox. ARGV: claim ms, max. Due members
#: get their score moved to now + claim ms (no one else sends them meanwhile); returns {member,
#: ...}.
OUTBOX_CLAIM = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), m) end
return due
"""

#: Alerts sender: the outcome of one delivery. KEYS: outbox, alerts hash. ARGV: member, state,
#: retry-in ms ('' = done). Not fenced: what happened at the receiver is a fact whoever leads now.
OUTBOX_RECORD = r"""
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""
