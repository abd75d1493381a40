-- purge.lua — an operator deletes the oldest finished tasks of one queue
-- and state (succeeded | dead | cancelled → gone), a bounded number per
-- call; the caller calls again until fewer come back.
-- KEYS[1] the queue's index of that state (id -> finish ms)
-- ARGV[1] key prefix         ARGV[2] most tasks to delete in this call
-- Reply: the number deleted.
-- Every member of an index is a finished task of that queue and state
-- (retry.lua and discard.lua take theirs out), so the low end of the index
-- is deleted as it is, as expire.lua deletes it.
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local ids = redis.call('ZRANGE', KEYS[1], 0, limit - 1)
if #ids == 0 then return 0 end
local keys = {}
for j, id in ipairs(ids) do keys[j] = task_key(prefix, id) end
for i = 1, #keys, CHUNK do
  redis.call('UNLINK', unpack(keys, i, math.min(i + CHUNK - 1, #keys)))
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #ids - 1)
return #ids
