-- expire.lua — the leader deletes finished tasks whose result TTL has passed.
-- KEYS[1] expiring zset (second → second: the seconds that have a list)
-- ARGV[1] key prefix         ARGV[2] most task hashes to delete in this call
-- Reply: the number of ids taken off the lists (their hashes deleted).
-- `finish` (prelude) files each finished task's id in `P expiring:<second>`,
-- the first whole second at or after its result expires, instead of a
-- PEXPIRE per task. Here the lists of seconds that have begun (Redis time)
-- are emptied from the front, each id's hash is deleted (UNLINK), and a second leaves the
-- sorted set once its list is gone, all in one script, so an id filed
-- while the list is emptied is never left without its second. A finished
-- task never runs again and its id is never reused, so deleting by id is
-- safe.
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local now_s = math.floor(now_ms() / 1000)
local deleted = 0
for _, second in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_s, 'LIMIT', 0, 16)) do
  local list = expiry_list(prefix, second)
  while deleted < limit do
    local ids = redis.call('LPOP', list, math.min(CHUNK, limit - deleted))
    if not ids then break end
    local keys = {}
    for j, id in ipairs(ids) do keys[j] = task_key(prefix, id) end
    redis.call('UNLINK', unpack(keys))
    deleted = deleted + #ids
  end
  if redis.call('EXISTS', list) == 0 then redis.call('ZREM', KEYS[1], second) end
  if deleted >= limit then break end
end
return deleted
