-- leader.lua — take, keep or give up the leader lease (one coordinator runs
-- the reaper and the scheduler).
-- KEYS[1] leader string
-- ARGV[1] candidate id       ARGV[2] lease TTL ms (0 = give the lease up)
-- Reply: 1 if the candidate holds the lease after the call, else 0.
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
