-- control.lua — an operator changes a queue's settings: pause, resume,
-- drain, accept again, or its limits (docs/QUEUES.md).
-- KEYS[1] the queue's meta hash (`P q:<queue>:meta`)
-- KEYS[2] wake stream
-- ARGV[1..] 2 per setting: field, value ('' removes the setting)
--           fields: paused, draining ('1' or ''), conc (running tasks at
--           most), rate (tokens a second), burst (the bucket's size)
-- Reply: the queue's paused, draining, conc, rate and burst after the
--        change (nil where unset).
-- A change of the token bucket's rate or size starts the bucket full,
-- so a lowered limit applies from now on, and a raised one at once.
-- The distributors are woken: a resumed queue, or one whose limit rose,
-- is looked at at once, not at their next timed look.
local bucket = false
for i = 1, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if value == '' then
    redis.call('HDEL', KEYS[1], field)
  else
    redis.call('HSET', KEYS[1], field, value)
  end
  if field == 'rate' or field == 'burst' then bucket = true end
end
if bucket then redis.call('HDEL', KEYS[1], 'tokens', 'refill') end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', WAKE_MAXLEN, '*', 'n', '0')
return redis.call('HMGET', KEYS[1], 'paused', 'draining', 'conc', 'rate', 'burst')
