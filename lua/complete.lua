-- complete.lua — a worker reports how attempts ended (running → succeeded |
-- scheduled (retry) | dead | cancelled | queued (handed back)).
-- KEYS[1] deadlines zset     KEYS[2] scheduled zset     KEYS[3] counts hash
-- KEYS[4] worker hash        KEYS[5] events stream      KEYS[6] intake stream
-- ARGV[1] key prefix         ARGV[2] worker id          ARGV[3] result TTL ms
-- ARGV[4] signed events envelope naming the tasks      ARGV[5] events MAXLEN
-- ARGV[6] signed intake envelope for handed-back tasks, with the versions they
--         will have once queued ('' if none)
-- ARGV[7..] runs of attempts that ended the same way under one epoch: a
--           header of 3 — outcome ('ok' | 'fail' | 'cancelled' | 'release'),
--           epoch, number of tasks n — then per task: id, fence, result JSON
--           or error text, and for 'fail' a 4th, the retry delay ms.
--           (Runs keep the call small: most of a call's cost per task in
--           Redis is its arguments and reply.)
-- Reply: flat array, 2 per task whose new state is not 'succeeded': its
--        position in the call (1-based, over all runs), and the new state
--        ('scheduled', 'dead', 'cancelled', 'queued') or 'stale' when the
--        caller no longer holds the lease (wrong state, worker, epoch or
--        fence): a zombie worker's late completion changes nothing.
-- 'release' hands a task back without charging an attempt (graceful
-- shutdown); it is queued again and announced on the intake stream, unless
-- a cancel was requested meanwhile: then it is cancelled.
local prefix, wid, ttl = ARGV[1], ARGV[2], ARGV[3]
local now = int(now_ms())
local reply, deltas, changed, released, done = {}, {}, 0, {}, {}
local i, position = 7, 0
while i <= #ARGV do
  local outcome, epoch, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local per_task = outcome == 'fail' and 4 or 3
  i = i + 3
  for _ = 1, n do
    local id, fence, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local delay = per_task == 4 and ARGV[i + 3]
    i, position = i + per_task, position + 1
    local key = task_key(prefix, id)
    -- Only the fields every outcome needs: a field the hash does not hold
    -- (`cr`, usually) costs a scan of the whole hash.
    local t = redis.call('HMGET', key, 'state', 'w', 'e', 'f', 'v')
    local state
    if t[1] ~= 'running' or t[2] ~= wid or t[3] ~= epoch or t[4] ~= fence then
      state = 'stale'
    else
      local v = int(t[5] + 1)
      done[#done + 1] = id
      bump(deltas, 'running', -1)
      local back = outcome == 'release' and redis.call('HMGET', key, 'cr', 'att')
      if outcome == 'ok' then
        finish(key, 'succeeded', now, ttl, v, 'res', payload)
        state = 'succeeded'
      elseif outcome == 'cancelled' or (back and back[1] == '1') then
        finish(key, 'cancelled', now, ttl, v)
        state = 'cancelled'
      elseif back then
        redis.call('HSET', key, 'state', 'queued', 'v', v, 'att', int(back[2] - 1), 'ut', now, 'w', '')
        bump(deltas, 'queued', 1)
        released[#released + 1] = id
        state = 'queued'
      else
        state = settle_failure(key, id, now, delay, ttl, v, payload, deltas, KEYS[2])
      end
      changed = changed + 1
    end
    if state ~= 'succeeded' then reply[#reply + 1], reply[#reply + 2] = int(position), state end
  end
end
if changed > 0 then
  zrem_many(KEYS[1], done)
  local k = KEYS[4]
  if redis.call('EXISTS', k) == 1 then
    if tonumber(redis.call('HINCRBY', k, 'used', -changed)) < 0 then redis.call('HSET', k, 'used', 0) end
  end
  flush_counts(KEYS[3], deltas)
  append(KEYS[5], ARGV[4], ARGV[5])
  announce(prefix, KEYS[6], ARGV[6], released)
end
return reply
