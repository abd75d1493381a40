-- complete.lua — a worker reports how attempts ended (running → succeeded |
-- scheduled (retry) | dead | cancelled | queued (handed back)).
-- KEYS[1] deadlines zset     KEYS[2] scheduled zset     KEYS[3] counts hash
-- KEYS[4] worker hash        KEYS[5] events stream      KEYS[6] intake stream
-- ARGV[1] key prefix         ARGV[2] worker id          ARGV[3] result TTL ms
-- ARGV[4] signed events envelope naming the tasks      ARGV[5] events MAXLEN
-- ARGV[6] signed intake envelope for handed-back tasks, with the versions they
--         will have once queued ('' if none)
-- ARGV[7..] 6 per task: id, epoch, fence, outcome ('ok' | 'fail' |
--           'cancelled' | 'release'), result JSON or error text, retry delay ms
-- Reply: flat array, one per task: the new state ('succeeded', 'scheduled',
--        'dead', 'cancelled', 'queued') or 'stale' when the caller no longer
--        holds the lease (wrong state, worker, epoch or fence): a zombie
--        worker's late completion changes nothing.
-- 'release' hands a task back without charging an attempt (graceful
-- shutdown); it is queued again and announced on the intake stream, unless
-- a cancel was requested meanwhile: then it is cancelled.
local prefix, wid, ttl = ARGV[1], ARGV[2], ARGV[3]
local now = int(now_ms())
local reply, deltas, changed, released, done = {}, {}, 0, {}, {}
for i = 7, #ARGV, 6 do
  local id, epoch, fence, outcome, payload, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local key = task_key(prefix, id)
  -- Only the fields every outcome needs: a field the hash does not hold
  -- (`cr`, usually) costs a scan of the whole hash.
  local t = redis.call('HMGET', key, 'state', 'w', 'e', 'f', 'v')
  if t[1] ~= 'running' or t[2] ~= wid or t[3] ~= epoch or t[4] ~= fence then
    reply[#reply + 1] = 'stale'
  else
    local v = int(t[5] + 1)
    local state
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
    reply[#reply + 1] = state
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
