-- forget_workers.lua — the leader removes workers silent for too long: their
-- hash, their stream and their entry in the workers set. Tasks they held
-- keep their deadlines, so the reaper still moves them on.
-- KEYS[1] workers zset
-- ARGV[1] key prefix         ARGV[2] silence in ms after which a worker is forgotten
-- Reply: the ids forgotten.
local prefix = ARGV[1]
local cutoff = now_ms() - tonumber(ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, 100)
for _, wid in ipairs(gone) do
  redis.call('DEL', worker_key(prefix, wid), worker_key(prefix, wid) .. ':in')
  redis.call('ZREM', KEYS[1], wid)
end
return gone
