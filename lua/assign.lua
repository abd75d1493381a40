-- assign.lua — place a batch of queued tasks on one worker (queued → assigned).
-- KEYS[1] worker hash        KEYS[2] worker stream      KEYS[3] deadlines zset
-- KEYS[4] counts hash
-- ARGV[1] key prefix         ARGV[2] signed assign envelope (task ids with the
--                                    versions they will have once assigned)
-- ARGV[3] assignment TTL ms (the worker must start the task by then)
-- ARGV[4] worker id
-- ARGV[5..] 2 per task: id, expected version
-- Reply: flat array, one status per task: 'ok' | 'full' | 'missing' | 'gone'
--        (worker unknown or draining) | 'conflict' (version) | 'state:<s>'
-- The worker's credit (capacity - used) is checked here, inside the script,
-- so two distributors can never over-fill one worker. The envelope is
-- appended only if at least one task was assigned; entries in it for tasks
-- that were not are stale and the worker's start refuses them.
local prefix, envelope, ttl, wid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local reply = {}
local w = redis.call('HMGET', KEYS[1], 'cap', 'used', 'draining')
if not w[1] or w[3] == '1' then
  for i = 5, #ARGV, 2 do reply[#reply + 1] = 'gone' end
  return reply
end
local free = tonumber(w[1]) - tonumber(w[2] or '0')
local now = now_ms()
local now_s, deadline = int(now), int(now + ttl)
local deadlines = {}
local assigned = 0
for i = 5, #ARGV, 2 do
  local id, expected = ARGV[i], ARGV[i + 1]
  local key = task_key(prefix, id)
  local t = redis.call('HMGET', key, 'state', 'v')
  if not t[1] then
    reply[#reply + 1] = 'missing'
  elseif t[1] ~= 'queued' then
    reply[#reply + 1] = 'state:' .. t[1]
  elseif t[2] ~= expected then
    reply[#reply + 1] = 'conflict'
  elseif free <= 0 then
    reply[#reply + 1] = 'full'
  else
    redis.call('HSET', key, 'state', 'assigned', 'v', int(t[2] + 1), 'w', wid, 'ut', now_s)
    deadlines[#deadlines + 1] = deadline
    deadlines[#deadlines + 1] = id
    free = free - 1
    assigned = assigned + 1
    reply[#reply + 1] = 'ok'
  end
end
if assigned > 0 then
  zadd_pairs(KEYS[3], deadlines)
  redis.call('HINCRBY', KEYS[1], 'used', assigned)
  redis.call('HINCRBY', KEYS[4], 'queued', -assigned)
  redis.call('HINCRBY', KEYS[4], 'assigned', assigned)
  append(KEYS[2], envelope)
end
return reply
