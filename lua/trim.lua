-- trim.lua — drop acknowledged entries from a stream read by one consumer group.
-- KEYS[1] stream
-- ARGV[1] consumer group
-- Reply: number of entries removed.
-- The bound is the older of the group's oldest pending entry and its
-- last-delivered id, so an undelivered or unacknowledged entry is never
-- trimmed (trimming to the stream's last id would lose tasks).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, delivered
  for j = 1, #g, 2 do
    if g[j] == 'name' then name = g[j + 1] end
    if g[j] == 'last-delivered-id' then delivered = g[j + 1] end
  end
  if name == ARGV[1] then last = delivered end
end
if not last or last == '0-0' then return 0 end
local bound = last
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
if pending[1] > 0 then bound = pending[2] end
return redis.call('XTRIM', KEYS[1], 'MINID', bound)
