-- discard.lua — an operator deletes finished tasks before their result
-- TTL (succeeded | dead | cancelled → gone).
-- KEYS: none (each task's index is named from its hash, under the prefix)
-- ARGV[1] key prefix
-- ARGV[2..] task ids
-- Reply: flat array, one per task: 'discarded' | 'missing' | 'state:<s>'
--        (live: only finished tasks are discarded)
local prefix = ARGV[1]
local reply = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = task_key(prefix, id)
  local t = redis.call('HMGET', key, 'state', 'q')
  if not t[1] then
    reply[#reply + 1] = 'missing'
  elseif t[1] ~= 'succeeded' and t[1] ~= 'dead' and t[1] ~= 'cancelled' then
    reply[#reply + 1] = 'state:' .. t[1]
  else
    redis.call('ZREM', index_key(prefix, t[2], t[1]), id)
    redis.call('UNLINK', key)
    reply[#reply + 1] = 'discarded'
  end
end
return reply
