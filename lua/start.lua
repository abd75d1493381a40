-- start.lua — a worker takes the lease on tasks assigned to it (assigned → running).
-- Only for tasks left `assigned` by a distributor older than the one that
-- takes the lease inside assign.lua, so a worker upgraded first still runs
-- them during a rolling upgrade. Current distributors never produce
-- `assigned`: the worker reads such tasks without a script (Store::claim).
-- KEYS[1] worker stream      KEYS[2] deadlines zset     KEYS[3] counts hash
-- KEYS[4] epoch hash (epoch, run: the Redis run_id it was made under)
-- ARGV[1] key prefix         ARGV[2] consumer group     ARGV[3] stream entry id to
--                                                      acknowledge ('' = none)
-- ARGV[4] worker id          ARGV[5] lease TTL ms
-- ARGV[6..] 2 per task: id, version named by the assign message
-- Reply: flat array, 12 per task: status ('ok' | 'missing' | 'conflict' |
--        'state:<s>' | 'other-worker'), then for 'ok': version, epoch, fence,
--        handler, input, timeout ms, attempt, max attempts, tags JSON,
--        priority, ready ms (when it could first run: created or due)
--        (else '' each).
-- Taking the lease increments the fence; (epoch, fence) is the token that
-- renew and complete must present. Tasks already running keep the epoch
-- they were started under.
-- A replayed or stale assign message names an old version and is refused.
local prefix, group, entry, wid, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now = now_ms()
local now_s, deadline = int(now), int(now + lease)
local epoch = current_epoch(KEYS[4], now)
local reply, deadlines, started = {}, {}, 0
local function refuse(status)
  reply[#reply + 1] = status
  for _ = 1, 11 do reply[#reply + 1] = '' end
end
for i = 6, #ARGV, 2 do
  local id, version = ARGV[i], ARGV[i + 1]
  local key = task_key(prefix, id)
  local t = redis.call('HMGET', key, 'state', 'v', 'w', 'f', 'att', 'h', 'in', 'to', 'max', 'tags', 'prio', 'ct', 'run_at')
  if not t[1] then
    refuse('missing')
  elseif t[1] ~= 'assigned' then
    refuse('state:' .. t[1])
  elseif t[2] ~= version then
    refuse('conflict')
  elseif t[3] ~= wid then
    refuse('other-worker')
  else
    local v, fence, att = int(t[2] + 1), int((t[4] or 0) + 1), int((t[5] or 0) + 1)
    redis.call('HSET', key, 'state', 'running', 'v', v, 'f', fence, 'e', epoch, 'att', att, 'st', now_s, 'ut', now_s)
    deadlines[#deadlines + 1] = deadline
    deadlines[#deadlines + 1] = id
    started = started + 1
    local ready = t[12] or '0'
    if tonumber(t[13] or '0') > tonumber(ready) then ready = t[13] end
    local n = #reply
    reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4] = 'ok', v, epoch, fence
    reply[n + 5], reply[n + 6], reply[n + 7], reply[n + 8] = t[6], t[7], t[8] or UNSTORED_TIMEOUT_MS, att
    reply[n + 9], reply[n + 10], reply[n + 11], reply[n + 12] = t[9] or UNSTORED_MAX, t[10] or '[]', t[11] or '0', ready
  end
end
if started > 0 then
  zadd_pairs(KEYS[2], deadlines)
  redis.call('HINCRBY', KEYS[3], 'assigned', -started)
  redis.call('HINCRBY', KEYS[3], 'running', started)
end
if entry ~= '' then redis.call('XACK', KEYS[1], group, entry) end
return reply
