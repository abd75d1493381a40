-- reannounce.lua — put queued tasks on the intake stream again (queued →
-- queued, new version, new entry). The reconciler uses it for tasks whose
-- entry is gone (lost with a Redis restart, or refused as expired); the
-- distributor for tasks that waited long for a worker, so their old entry
-- can be acknowledged and the stream trimmed past it.
-- KEYS[1] intake stream
-- ARGV[1] key prefix
-- ARGV[2] signed intake envelope naming the tasks with the versions they
--         will have once announced again
-- ARGV[3..] 2 per task: id, expected version
-- Reply: flat array, one per task: 'queued' | 'conflict' | 'state:<s>' | 'missing'
local prefix = ARGV[1]
local now = now_ms()
local reply, queued = {}, {}
for i = 3, #ARGV, 2 do
  local id, expected = ARGV[i], ARGV[i + 1]
  local key = task_key(prefix, id)
  local t = redis.call('HMGET', key, 'state', 'v')
  if not t[1] then
    reply[#reply + 1] = 'missing'
  elseif t[1] ~= 'queued' then
    reply[#reply + 1] = 'state:' .. t[1]
  elseif t[2] ~= expected then
    reply[#reply + 1] = 'conflict'
  else
    redis.call('HSET', key, 'v', tonumber(t[2]) + 1, 'ut', now)
    queued[#queued + 1] = id
    reply[#reply + 1] = 'queued'
  end
end
announce(prefix, KEYS[1], ARGV[2], queued)
return reply
