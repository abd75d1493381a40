-- expire.lua — the leader deletes finished tasks whose result TTL has passed.
-- KEYS[1] queues set (the names of every queue that has had a task)
-- KEYS[2] expiring zset of builds before the queue indexes (second → second)
-- ARGV[1] key prefix         ARGV[2] most task hashes to delete in this call
-- ARGV[3] result TTL ms
-- Reply: the number of ids taken off the indexes and lists (their hashes
--        deleted).
-- `finish` (prelude) files each finished task in its queue's index of its
-- state, `P q:<queue>:idx:<state>`, scored by its finish time. Here each
-- index gives up its low end, the tasks finished at or before now − TTL
-- (Redis time): their hashes are deleted (UNLINK) and they leave the index
-- (ZREMRANGEBYRANK of the same ranks), in one script, so an id is never
-- left in an index without its hash for long. A finished task leaves its
-- index when an operator retries it (retry.lua), so a task that runs again
-- is never deleted here.
-- Builds before the indexes filed ids in `P expiring:<second>` lists
-- instead; those lists are still emptied, as they were, once their second
-- has begun, but a task that is not terminal any more (retried since) is
-- left alone.
local prefix, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local cutoff = now - ttl
local deleted = 0
local TERMINAL = { 'succeeded', 'dead', 'cancelled' }
for _, q in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  for _, state in ipairs(TERMINAL) do
    if deleted >= limit then return deleted end
    local index = index_key(prefix, q, state)
    local ids = redis.call('ZRANGEBYSCORE', index, '-inf', cutoff, 'LIMIT', 0, math.min(CHUNK, limit - deleted))
    if #ids > 0 then
      local keys = {}
      for j, id in ipairs(ids) do keys[j] = task_key(prefix, id) end
      redis.call('UNLINK', unpack(keys))
      redis.call('ZREMRANGEBYRANK', index, 0, #ids - 1)
      deleted = deleted + #ids
    end
  end
end
local now_s = math.floor(now / 1000)
for _, second in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_s, 'LIMIT', 0, 16)) do
  local list = prefix .. 'expiring:' .. second
  while deleted < limit do
    local ids = redis.call('LPOP', list, math.min(CHUNK, limit - deleted))
    if not ids then break end
    for _, id in ipairs(ids) do
      local key = task_key(prefix, id)
      local state = redis.call('HGET', key, 'state')
      if state == 'succeeded' or state == 'dead' or state == 'cancelled' then redis.call('UNLINK', key) end
    end
    deleted = deleted + #ids
  end
  if redis.call('EXISTS', list) == 0 then redis.call('ZREM', KEYS[2], second) end
  if deleted >= limit then break end
end
return deleted
