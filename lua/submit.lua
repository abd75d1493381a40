-- submit.lua — accept a batch of new tasks (transition: → queued | scheduled).
-- KEYS[1] intake stream      KEYS[2] scheduled zset     KEYS[3] counts hash
-- ARGV[1] key prefix         ARGV[2] signed intake envelope listing the tasks
--                                    the caller expects to be queued now ('' if none)
-- ARGV[3] idempotency TTL ms
-- ARGV[4..] 9 per task: id, handler, input JSON, tags JSON, priority,
--           max attempts, timeout ms, run_at ms (0 = now: the task is in the
--           envelope), idempotency key ('' = none)
-- Reply: flat array, 2 per task: id (the existing one for a duplicate),
--        status: 'queued' | 'scheduled' | 'duplicate'
-- The caller decides queued (run_at 0, listed in the envelope) or
-- scheduled (run_at set, not listed), so the two always agree; the
-- scheduler queues a scheduled task once Redis time reaches its run_at.
-- The envelope is appended first (the caller sends '' when it lists no
-- task), so each queued task's entry id (`ent`, for the reconciler) goes
-- into the task's own HSET. A task the envelope lists that turns out to be
-- a duplicate has no hash; distributors skip such ids as missing.
local prefix, envelope, idem_ttl = ARGV[1], ARGV[2], ARGV[3]
local now = int(now_ms())
local reply, deltas = {}, {}
local ent = append(KEYS[1], envelope)
for i = 4, #ARGV, 9 do
  local id, handler, input, tags, prio = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local max, timeout, run_at, idem = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
  local existing = false
  if idem ~= '' then
    local idem_key = prefix .. 'idem:' .. idem
    local prior = redis.call('GET', idem_key)
    if prior and redis.call('EXISTS', task_key(prefix, prior)) == 1 then
      reply[#reply + 1] = prior
      reply[#reply + 1] = 'duplicate'
      existing = true
    else
      redis.call('SET', idem_key, id, 'PX', idem_ttl)
    end
  end
  if not existing then
    -- Fields at their defaults are not stored (memory per queued task):
    -- att and f (0), ut (= ct), run_at (0), tags ([]), prio (0). Readers
    -- treat a missing field as its default.
    local key = task_key(prefix, id)
    local state
    if run_at ~= '0' then
      state = 'scheduled'
      redis.call('HSET', key, 'state', state, 'v', '1', 'h', handler, 'in', input, 'max', max, 'to', timeout,
        'ct', now, 'run_at', run_at)
      redis.call('ZADD', KEYS[2], run_at, id)
    else
      state = 'queued'
      assert(ent, 'submit: a task to queue now is not in the intake envelope')
      redis.call('HSET', key, 'state', state, 'v', '1', 'h', handler, 'in', input, 'max', max, 'to', timeout,
        'ct', now, 'ent', ent)
    end
    -- Only what differs from the default is written (rare: one more HSET;
    -- the table is made only then).
    if tags ~= '[]' or prio ~= '0' or idem ~= '' then
      local extra = {}
      if tags ~= '[]' then extra[#extra + 1], extra[#extra + 2] = 'tags', tags end
      if prio ~= '0' then extra[#extra + 1], extra[#extra + 2] = 'prio', prio end
      if idem ~= '' then extra[#extra + 1], extra[#extra + 2] = 'idem', idem end
      redis.call('HSET', key, unpack(extra))
    end
    bump(deltas, state, 1)
    reply[#reply + 1] = id
    reply[#reply + 1] = state
  end
end
flush_counts(KEYS[3], deltas)
return reply
