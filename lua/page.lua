-- page.lua — one page of tasks from sorted sets of ids (read only): a
-- queue's index of one terminal state, several queues' indexes merged, or
-- the scheduled set.
-- KEYS[1..] the sorted sets, each id -> ms (finish time, or run_at)
-- ARGV[1] key prefix
-- ARGV[2] the cursor's score ('' = from the start)  ARGV[3] the cursor's id
--         ('' = after every member of that score or lower)
-- ARGV[4] page size
-- ARGV[5] the queue a task must be in ('' = any): for the scheduled set,
--         which holds every queue's tasks
-- Reply: { next score, next id, id 1, fields 1, id 2, fields 2, ... }: the
--        tasks after the cursor in (score, id) order, each with its hash as
--        a flat field/value array, and the cursor of the last member read
--        ('' and '' when the sets hold nothing after it).
-- Order is (score, id), the order Redis keeps members of equal score in,
-- so the cursor is stable: members added or removed before it do not move
-- what comes after. A cursor whose member is gone resumes at its place by
-- score and id. With a queue filter at most 10 pages of members are read,
-- so a page may come back short; its cursor then carries on.
local prefix, after_score, after_id, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local queue = ARGV[5]

-- Whether id `a` sorts at or before `b` as Redis orders members (bytes, as
-- memcmp: Lua's own `<=` follows the locale's collation).
local function at_or_before(a, b)
  for k = 1, math.min(#a, #b) do
    local x, y = string.byte(a, k), string.byte(b, k)
    if x ~= y then return x < y end
  end
  return #a <= #b
end

-- The rank of the first member after the cursor in one set.
local function start_rank(key)
  if after_score == '' then return 0 end
  if after_id == '' then return redis.call('ZCOUNT', key, '-inf', after_score) end
  local rank = redis.call('ZRANK', key, after_id)
  if rank then return rank + 1 end
  local before = redis.call('ZCOUNT', key, '-inf', '(' .. after_score)
  -- Members of the cursor's own score sort by id: count those up to it.
  local ties = redis.call('ZRANGEBYSCORE', key, after_score, after_score)
  for _, id in ipairs(ties) do
    if at_or_before(id, after_id) then before = before + 1 end
  end
  return before
end

-- Candidates: up to `want` members after the cursor from every set.
local function candidates(want)
  local all = {}
  for _, key in ipairs(KEYS) do
    local start = start_rank(key)
    local got = redis.call('ZRANGE', key, start, start + want - 1, 'WITHSCORES')
    for j = 1, #got, 2 do all[#all + 1] = { tonumber(got[j + 1]), got[j] } end
  end
  table.sort(all, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] ~= b[2] and at_or_before(a[2], b[2])
  end)
  return all
end

local reply = { '', '' }
local want = limit
local found = 0
for _ = 1, (queue == '' and 1 or 10) do
  local all = candidates(want)
  local n = math.min(#all, want)
  for j = 1, n do
    local score, id = all[j][1], all[j][2]
    after_score, after_id = string.format('%d', score), id
    reply[1], reply[2] = after_score, after_id
    local fields = redis.call('HGETALL', task_key(prefix, id))
    if #fields > 0 then
      local q = 'default'
      for k = 1, #fields, 2 do
        if fields[k] == 'q' then q = fields[k + 1] end
      end
      if queue == '' or q == queue then
        reply[#reply + 1], reply[#reply + 2] = id, fields
        found = found + 1
        if found == limit then return reply end
      end
    end
  end
  if #all < want then
    -- Nothing after the last member read: the end.
    reply[1], reply[2] = '', ''
    return reply
  end
end
return reply
