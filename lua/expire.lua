-- expire.lua — the leader deletes finished tasks whose result TTL has passed.
-- KEYS[1] queues set (the names of every queue that has had a task)
-- KEYS[2] done zset: seconds (second → second) at which succeeded tasks
--         filed in lists expire (when limits.index_succeeded is off)
-- KEYS[3] expiring zset of builds before the queue indexes (second → second)
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
-- Succeeded tasks that are not indexed (limits.index_succeeded off) are
-- filed in `P done:<second>` lists, by the second their result expires;
-- those lists are emptied once their second has begun. Builds before the
-- indexes filed every finished task in `P expiring:<second>` lists: those
-- are emptied the same way, but a task that is not finished any more
-- (retried since) is left alone.
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
-- The lists of a zset of seconds (second -> second) whose second has
-- begun, emptied from the front; with `check`, an id whose task is not
-- finished any more is left alone (lists of earlier builds: an operator may
-- have retried the task since).
local now_s = math.floor(now / 1000)
local function drain(seconds, list_prefix, check)
  for _, second in ipairs(redis.call('ZRANGEBYSCORE', seconds, '-inf', now_s, 'LIMIT', 0, 16)) do
    local list = list_prefix .. second
    while deleted < limit do
      local ids = redis.call('LPOP', list, math.min(CHUNK, limit - deleted))
      if not ids then break end
      local keys = {}
      for _, id in ipairs(ids) do
        local key = task_key(prefix, id)
        local state = check and redis.call('HGET', key, 'state')
        if not check or state == 'succeeded' or state == 'dead' or state == 'cancelled' then keys[#keys + 1] = key end
      end
      if #keys > 0 then redis.call('UNLINK', unpack(keys)) end
      deleted = deleted + #ids
    end
    if redis.call('EXISTS', list) == 0 then redis.call('ZREM', seconds, second) end
    if deleted >= limit then return end
  end
end
drain(KEYS[2], prefix .. 'done:', false)
drain(KEYS[3], prefix .. 'expiring:', true)
return deleted
