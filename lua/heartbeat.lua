-- heartbeat.lua — a worker says it is alive and what it offers.
-- KEYS[1] worker hash        KEYS[2] workers zset (id → last heartbeat ms)
-- KEYS[3] handlers hash (handler name → last time a worker offered it)
-- ARGV[1] worker id          ARGV[2] capacity           ARGV[3] handlers JSON array
-- ARGV[4] tags JSON array    ARGV[5] in-flight count    ARGV[6] draining (0|1)
-- ARGV[7] version string
-- ARGV[8] the queues it takes tasks from, `<queue>:<weight>` comma-joined
--         ('' = every queue)
-- Reply: Redis time in ms.
-- `used` (the credit the assign script spends) is kept; it is created at 0.
local now = now_ms()
redis.call('HSET', KEYS[1], 'cap', ARGV[2], 'handlers', ARGV[3], 'tags', ARGV[4],
  'inflight', ARGV[5], 'draining', ARGV[6], 'version', ARGV[7], 'queues', ARGV[8], 'hb', now)
redis.call('HSETNX', KEYS[1], 'used', 0)
redis.call('ZADD', KEYS[2], now, ARGV[1])
for _, h in ipairs(cjson.decode(ARGV[3])) do
  redis.call('HSET', KEYS[3], h, now)
end
return now
