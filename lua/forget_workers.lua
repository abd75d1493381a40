-- forget_workers.lua — the leader removes workers silent for too long: their
-- hash, their stream and their entry in the workers set; and handler names
-- no worker has offered for as long. Tasks the workers held keep their
-- deadlines, so the reaper still moves them on.
-- KEYS[1] workers zset       KEYS[2] handlers hash (name → last offered ms)
-- ARGV[1] key prefix         ARGV[2] silence in ms after which a worker is forgotten
-- Reply: the ids forgotten.
local prefix = ARGV[1]
local cutoff = now_ms() - tonumber(ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, 100)
for _, wid in ipairs(gone) do
  redis.call('DEL', worker_key(prefix, wid), worker_key(prefix, wid) .. ':in')
  redis.call('ZREM', KEYS[1], wid)
end
local handlers = redis.call('HGETALL', KEYS[2])
for i = 1, #handlers, 2 do
  if tonumber(handlers[i + 1]) < cutoff then redis.call('HDEL', KEYS[2], handlers[i]) end
end
return gone
