-- renew.lua — a worker extends the leases of the batches it runs tasks of.
-- KEYS[1] leases zset
-- ARGV[1] key prefix         ARGV[2] worker id          ARGV[3] lease TTL ms
-- ARGV[4..] runs, one per batch: the batch's fencing token, the number of
--           tasks n, then the n task ids
-- Reply: flat array, one status per task: 'ok' | 'cancel' (renewed, but a
--        cancel was requested: stop the handler) | 'lost' (the lease is no
--        longer this worker's: stop the handler, do not complete)
-- A batch whose record is gone or names another worker has lost all its
-- tasks. Otherwise its one deadline moves (ZADD XX: a lease the reaper
-- already ended stays ended), and each task is checked on its own: it may
-- have been ended (reaped, cancelled before it ran) while others still run.
local prefix, wid, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local deadline = int(now_ms() + lease)
local reply = {}
local i = 4
while i <= #ARGV do
  local token, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local ours = redis.call('HGET', batch_key(prefix, token), 'w') == wid
  if ours then redis.call('ZADD', KEYS[1], 'XX', deadline, token) end
  for _ = 1, n do
    local t = ours and redis.call('HMGET', task_key(prefix, ARGV[i]), 'state', 'b', 'cr')
    i = i + 1
    if not t or t[1] ~= 'running' or t[2] ~= token then
      reply[#reply + 1] = 'lost'
    elseif t[3] == '1' then
      reply[#reply + 1] = 'cancel'
    else
      reply[#reply + 1] = 'ok'
    end
  end
end
return reply
