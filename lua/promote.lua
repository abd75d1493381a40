-- promote.lua — the leader queues delayed tasks and retries whose time has
-- come (scheduled → queued).
-- KEYS[1] scheduled zset     KEYS[2] counts hash
-- ARGV[1] key prefix
-- ARGV[2..] 2 per task: id, expected version
-- Reply: flat array, one per task: 'queued' | 'early' (run_at not reached
--        by Redis' clock) | 'conflict' | 'gone' (no such scheduled task; the
--        member is dropped)
local prefix = ARGV[1]
local now = now_ms()
local reply, dropped, queued = {}, {}, 0
for i = 2, #ARGV, 2 do
  local id, expected = ARGV[i], ARGV[i + 1]
  local key = task_key(prefix, id)
  local t = redis.call('HMGET', key, 'state', 'v', 'q', 'h', 'tags', 'prio')
  local at = redis.call('ZSCORE', KEYS[1], id)
  if not t[1] or t[1] ~= 'scheduled' or not at then
    reply[#reply + 1] = 'gone'
    dropped[#dropped + 1] = id
  elseif tonumber(at) > now then
    reply[#reply + 1] = 'early'
  elseif t[2] ~= expected then
    reply[#reply + 1] = 'conflict'
  else
    redis.call('HSET', key, 'state', 'queued', 'v', tonumber(t[2]) + 1, 'ut', now)
    dropped[#dropped + 1] = id
    queued = queued + 1
    enqueue_later(id, t[3], t[4], t[5], t[6])
    reply[#reply + 1] = 'queued'
  end
end
zrem_many(KEYS[1], dropped)
if queued > 0 then
  redis.call('HINCRBY', KEYS[2], 'scheduled', -queued)
  redis.call('HINCRBY', KEYS[2], 'queued', queued)
  file_enqueued(prefix)
end
return reply
