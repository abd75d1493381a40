-- renew.lua — a worker extends the leases of the tasks it is running.
-- KEYS[1] deadlines zset
-- ARGV[1] key prefix         ARGV[2] worker id          ARGV[3] lease TTL ms
-- ARGV[4..] 3 per task: id, epoch, fence
-- Reply: flat array, one status per task: 'ok' | 'cancel' (renewed, but a
--        cancel was requested: stop the handler) | 'lost' (the lease is no
--        longer this worker's: stop the handler, do not complete)
local prefix, wid, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local reply, deadlines = {}, {}
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  local t = redis.call('HMGET', task_key(prefix, id), 'state', 'w', 'e', 'f', 'cr')
  if t[1] ~= 'running' or t[2] ~= wid or t[3] ~= ARGV[i + 1] or t[4] ~= ARGV[i + 2] then
    reply[#reply + 1] = 'lost'
  else
    deadlines[#deadlines + 1] = now + lease
    deadlines[#deadlines + 1] = id
    if t[5] == '1' then reply[#reply + 1] = 'cancel' else reply[#reply + 1] = 'ok' end
  end
end
zadd_xx_pairs(KEYS[1], deadlines)
return reply
