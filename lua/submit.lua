-- submit.lua — accept a batch of new tasks (transition: → queued | scheduled).
-- KEYS[1] scheduled zset     KEYS[2] counts hash
-- ARGV[1] key prefix         ARGV[2] idempotency TTL ms
-- ARGV[3..] runs of tasks that share every setting: a header of 11 — number
--           of tasks n, handler, tags JSON, priority, max attempts, timeout
--           ms, run_at ms (0 = now), idempotency key ('' = none), queue,
--           unique key ('' = none), unique window ms ('0' = while the task
--           is live) — then n × 2: id, input JSON. (A run with a unique key
--           holds one task.)
--           (Runs keep the call small: per task only what differs, which
--           is most of what Redis spends on a call's arguments and reply.)
-- Reply: flat array, 2 per duplicate only: the task's position in the call
--        (1-based, over all runs), the earlier task's id (of the same
--        Idempotency-Key, or the live task holding the same unique key). Every other task
--        is 'queued' (run_at 0) or 'scheduled', as the caller chose.
--        When a queue named is draining, nothing is written and the reply
--        is { 0, 'draining:<queue>' }.
-- The caller decides queued (run_at 0) or scheduled (run_at set), so the
-- two always agree; the leader queues a scheduled task once Redis time
-- reaches its run_at. A queued task's id goes into its ready list
-- (prelude: enqueue_later, file_enqueued), which is the backlog
-- assign.lua takes from; one entry on `P wake` per call tells the
-- distributors to look.
-- Each queue named is noted in `P queues` (once per call), for listing and
-- for expire.lua, which walks every queue's indexes.
local prefix, idem_ttl = ARGV[1], ARGV[2]
-- A draining queue takes nothing: looked at for every queue of the call
-- before anything is written, so a call is taken whole or not at all.
local looked = {}
local r = 3
while r <= #ARGV do
  local queue = ARGV[r + 8]
  if not looked[queue] then
    looked[queue] = true
    if redis.call('HGET', meta_key(prefix, queue), 'draining') == '1' then return { 0, 'draining:' .. queue } end
  end
  r = r + 11 + 2 * tonumber(ARGV[r])
end
local now = int(now_ms())
local reply, deltas, noted = {}, {}, {}
local i, position = 3, 0
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
  -- Fields at their defaults are not stored (memory per queued task):
  -- att and f (0), ut (= ct), run_at (0), tags ([]), prio (0), q
  -- ('default'), and max and
  -- to when both are at UNSTORED_MAX / UNSTORED_TIMEOUT_MS (otherwise both
  -- go in the task's one HSET). Readers treat a missing field as its
  -- default. A scheduled task keeps its run_at. What else differs from
  -- the default goes in one more HSET (rare); the table is made once per
  -- run.
  local usual = max == UNSTORED_MAX and timeout == UNSTORED_TIMEOUT_MS
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
        redis.call('HSET', key, 'state', state, 'v', '1', 'h', handler, 'in', input, 'ct', now)
      else
        redis.call('HSET', key, 'state', state, 'v', '1', 'h', handler, 'in', input, 'max', max, 'to', timeout,
          'ct', now)
      end
      if state == 'scheduled' then
        redis.call('HSET', key, 'run_at', run_at)
        redis.call('ZADD', KEYS[1], run_at, id)
      else
        enqueue_later(id, queue, handler, tags, prio)
      end
      if extra then redis.call('HSET', key, unpack(extra)) end
      added = added + 1
    end
  end
  bump(deltas, state, added)
end
flush_counts(KEYS[2], deltas)
file_enqueued(prefix)
return reply
