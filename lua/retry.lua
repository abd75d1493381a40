-- retry.lua — an operator runs dead or cancelled tasks again (dead |
-- cancelled → queued), with their attempts reset.
-- KEYS[1] counts hash        KEYS[2] events stream
-- ARGV[1] key prefix
-- ARGV[2] signed events envelope naming the tasks      ARGV[3] events MAXLEN
-- ARGV[4..] 2 per task: id, expected version
-- Reply: flat array, 2 per task: id, 'queued' | 'missing' | 'conflict' (the
--        version moved on) | 'state:<s>' (not dead or cancelled: only
--        those are retried)
-- The run that ended is kept in the task's history (`hist`, a JSON array:
-- state, error, attempts, finish and retry times), and the fields it
-- left (`err`, `fin`, `res`, and `cr`, so the old cancel request does not
-- cancel the new run) are removed. The task leaves its queue's index of
-- the finished state, so expire.lua never deletes it while it runs again.
local prefix = ARGV[1]
local now = int(now_ms())
local reply, queued = {}, 0
for i = 4, #ARGV, 2 do
  local id, expected = ARGV[i], ARGV[i + 1]
  local key = task_key(prefix, id)
  local t = redis.call('HMGET', key, 'state', 'v', 'q', 'err', 'att', 'fin', 'hist', 'h', 'tags', 'prio')
  local outcome
  if not t[1] then
    outcome = 'missing'
  elseif t[1] ~= 'dead' and t[1] ~= 'cancelled' then
    outcome = 'state:' .. t[1]
  elseif t[2] ~= expected then
    outcome = 'conflict'
  else
    local hist = t[7] and cjson.decode(t[7]) or {}
    local ended = { state = t[1], attempts = tonumber(t[5] or '0'), finished_ms = tonumber(t[6] or '0'),
      retried_ms = tonumber(now) }
    if t[4] then ended.error = t[4] end
    hist[#hist + 1] = ended
    redis.call('ZREM', index_key(prefix, t[3], t[1]), id)
    redis.call('HDEL', key, 'err', 'fin', 'res', 'cr')
    redis.call('HSET', key, 'state', 'queued', 'v', int(t[2] + 1), 'att', '0', 'ut', now, 'hist', cjson.encode(hist))
    queued = queued + 1
    enqueue_later(id, t[3], t[8], t[9], t[10])
    outcome = 'queued'
  end
  reply[#reply + 1], reply[#reply + 2] = id, outcome
end
if queued > 0 then
  redis.call('HINCRBY', KEYS[1], 'queued', queued)
  file_enqueued(prefix)
  append(KEYS[2], ARGV[2], ARGV[3])
end
return reply
