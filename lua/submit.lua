-- submit.lua — accept a batch of new tasks (transition: → queued | scheduled).
-- KEYS[1] intake stream      KEYS[2] scheduled zset     KEYS[3] counts hash
-- ARGV[1] key prefix         ARGV[2] signed intake envelope listing the tasks
--                                    the caller expects to be queued now ('' if none)
-- ARGV[3] idempotency TTL ms
-- ARGV[4..] runs of tasks that share every setting: a header of 9 — number
--           of tasks n, handler, tags JSON, priority, max attempts, timeout
--           ms, run_at ms (0 = now: the tasks are in the envelope),
--           idempotency key ('' = none), queue, unique key ('' = none),
--           unique window ms ('0' = while the task is live) — then n × 2:
--           id, input JSON. (A run with a unique key holds one task.)
--           (Runs keep the call small: per task only what differs, which
--           is most of what Redis spends on a call's arguments and reply.)
-- Reply: flat array, 2 per duplicate only: the task's position in the call
--        (1-based, over all runs), the earlier task's id (of the same
--        Idempotency-Key, or the live task holding the same unique key). Every other task
--        is 'queued' (run_at 0) or 'scheduled', as the caller chose.
-- The caller decides queued (run_at 0, listed in the envelope) or
-- scheduled (run_at set, not listed), so the two always agree; the
-- scheduler queues a scheduled task once Redis time reaches its run_at.
-- The envelope is appended first (the caller sends '' when it lists no
-- task), so each queued task's entry id (`ent`, for the reconciler) goes
-- into the task's own HSET. A task the envelope lists that turns out to be
-- a duplicate has no hash; distributors skip such ids as missing.
-- Each queue named is noted in `P queues` (once per call), for listing and
-- for expire.lua, which walks every queue's indexes.
local prefix, envelope, idem_ttl = ARGV[1], ARGV[2], ARGV[3]
local now = int(now_ms())
local reply, deltas, noted = {}, {}, {}
local ent = append(KEYS[1], envelope)
local i, position = 4, 0
while i <= #ARGV do
  local n, handler, tags, prio = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local max, timeout, run_at, idem = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local queue, uniq, window = ARGV[i + 8], ARGV[i + 9], tonumber(ARGV[i + 10])
  i = i + 11
  if not noted[queue] then
    redis.call('SADD', queues_key(prefix), queue)
    noted[queue] = true
  end
  local state = run_at ~= '0' and 'scheduled' or 'queued'
  assert(state == 'scheduled' or ent, 'submit: a task to queue now is not in the intake envelope')
  -- Fields at their defaults are not stored (memory per queued task):
  -- att and f (0), ut (= ct), run_at (0), tags ([]), prio (0), q
  -- ('default'), and max and
  -- to when both are at UNSTORED_MAX / UNSTORED_TIMEOUT_MS (otherwise both
  -- go in the task's one HSET). Readers treat a missing field as its
  -- default. A scheduled task keeps its run_at, a queued one its intake
  -- entry. What else differs from the default goes in one more HSET
  -- (rare); the table is made once per run.
  local usual = max == UNSTORED_MAX and timeout == UNSTORED_TIMEOUT_MS
  local last, last_value = 'ent', ent
  if state == 'scheduled' then last, last_value = 'run_at', run_at end
  local extra
  if tags ~= '[]' or prio ~= '0' or idem ~= '' or queue ~= DEFAULT_QUEUE or uniq ~= '' then
    extra = {}
    if uniq ~= '' then
      extra[#extra + 1], extra[#extra + 2] = 'uq', uniq
      if window > 0 then extra[#extra + 1], extra[#extra + 2] = 'uw', int(now + window) end
    end
    if queue ~= DEFAULT_QUEUE then extra[#extra + 1], extra[#extra + 2] = 'q', queue end
    if tags ~= '[]' then extra[#extra + 1], extra[#extra + 2] = 'tags', tags end
    if prio ~= '0' then extra[#extra + 1], extra[#extra + 2] = 'prio', prio end
    if idem ~= '' then extra[#extra + 1], extra[#extra + 2] = 'idem', idem end
  end
  local added = 0
  for _ = 1, n do
    local id, input = ARGV[i], ARGV[i + 1]
    i, position = i + 2, position + 1
    local prior
    if idem ~= '' then
      -- Within one run too: two tasks with one key make one task.
      local idem_key = prefix .. 'idem:' .. idem
      prior = redis.call('GET', idem_key)
      if prior and redis.call('EXISTS', task_key(prefix, prior)) == 1 then
        reply[#reply + 1], reply[#reply + 2] = int(position), prior
      else
        prior = nil
        redis.call('SET', idem_key, id, 'PX', idem_ttl)
      end
    end
    if not prior and uniq ~= '' then
      -- The task holding the key, while it is live or its window lasts
      -- (prelude: unlock_later); a holder whose hash is gone holds nothing.
      local lock = prefix .. 'uniq:' .. uniq
      prior = redis.call('GET', lock)
      if prior and redis.call('EXISTS', task_key(prefix, prior)) == 1 then
        reply[#reply + 1], reply[#reply + 2] = int(position), prior
      else
        prior = nil
        redis.call('SET', lock, id)
      end
    end
    if not prior then
      local key = task_key(prefix, id)
      if usual then
        redis.call('HSET', key, 'state', state, 'v', '1', 'h', handler, 'in', input, 'ct', now, last, last_value)
      else
        redis.call('HSET', key, 'state', state, 'v', '1', 'h', handler, 'in', input, 'max', max, 'to', timeout,
          'ct', now, last, last_value)
      end
      if state == 'scheduled' then redis.call('ZADD', KEYS[2], run_at, id) end
      if extra then redis.call('HSET', key, unpack(extra)) end
      added = added + 1
    end
  end
  bump(deltas, state, added)
end
flush_counts(KEYS[3], deltas)
return reply
