-- start.lua — a worker takes the lease on tasks assigned to it (assigned → running).
-- KEYS[1] worker stream      KEYS[2] deadlines zset     KEYS[3] counts hash
-- KEYS[4] epoch string
-- ARGV[1] key prefix         ARGV[2] consumer group     ARGV[3] stream entry id to
--                                                      acknowledge ('' = none)
-- ARGV[4] worker id          ARGV[5] lease TTL ms
-- ARGV[6..] 2 per task: id, version named by the assign message
-- Reply: flat array, 11 per task: status ('ok' | 'missing' | 'conflict' |
--        'state:<s>' | 'other-worker'), then for 'ok': version, epoch, fence,
--        handler, input, timeout ms, attempt, max attempts, tags JSON,
--        priority (else '' each).
-- Taking the lease increments the fence; (epoch, fence) is the token that
-- renew and complete must present. The epoch is created here if Redis lost
-- it, so a token issued before a data loss never equals one issued after.
-- A replayed or stale assign message names an old version and is refused.
local prefix, group, entry, wid, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = now_ms()
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = tostring(now)
  redis.call('SET', KEYS[4], epoch)
end
local reply, deadlines, started = {}, {}, 0
local function refuse(status)
  reply[#reply + 1] = status
  for _ = 1, 10 do reply[#reply + 1] = '' end
end
for i = 6, #ARGV, 2 do
  local id, version = ARGV[i], ARGV[i + 1]
  local key = task_key(prefix, id)
  local t = redis.call('HMGET', key, 'state', 'v', 'w', 'f', 'att', 'h', 'in', 'to', 'max', 'tags', 'prio')
  if not t[1] then
    refuse('missing')
  elseif t[1] ~= 'assigned' then
    refuse('state:' .. t[1])
  elseif t[2] ~= version then
    refuse('conflict')
  elseif t[3] ~= wid then
    refuse('other-worker')
  else
    local v, fence, att = tonumber(t[2]) + 1, tonumber(t[4]) + 1, tonumber(t[5]) + 1
    redis.call('HSET', key, 'state', 'running', 'v', v, 'f', fence, 'e', epoch, 'att', att, 'st', now, 'ut', now)
    deadlines[#deadlines + 1] = now + lease
    deadlines[#deadlines + 1] = id
    started = started + 1
    local r = { 'ok', tostring(v), epoch, tostring(fence), t[6], t[7], t[8], tostring(att), t[9], t[10], t[11] }
    for _, x in ipairs(r) do reply[#reply + 1] = x end
  end
end
if started > 0 then
  redis.call('ZADD', KEYS[2], unpack(deadlines))
  redis.call('HINCRBY', KEYS[3], 'assigned', -started)
  redis.call('HINCRBY', KEYS[3], 'running', started)
end
if entry ~= '' then redis.call('XACK', KEYS[1], group, entry) end
return reply
