-- assign.lua — take queued tasks from the backlog for one worker and lease
-- them there, one lease for all of them (queued → running).
-- KEYS[1] worker hash        KEYS[2] worker stream      KEYS[3] leases zset
-- KEYS[4] counts hash        KEYS[5] epoch hash (epoch, run: the Redis
--                                    run_id it was made under)
-- KEYS[6] batch counter
-- ARGV[1] key prefix         ARGV[2] signed assign envelope (names no task:
--                                    this script chooses them)
-- ARGV[3] lease TTL ms       ARGV[4] worker id
-- ARGV[5] most tasks to take
-- ARGV[6..] the backlogs to take from, as `P active` names them:
--           '<queue> <class>', each a class the worker can run
-- Reply: flat array: the number of tasks taken; the worker's room after
--        the call ('room' | 'full' | 'gone': unknown or draining); the ids
--        taken, comma-joined (for the distributor's log); then 2
--        per backlog that could give no more: its position among ARGV[6..]
--        (1-based) and why: 'empty' | 'paused' | 'busy' (its queue is at
--        its concurrency limit) | 'rate:<ms>' (its queue's token bucket is
--        empty: the ms until the next token).
-- Which task comes next: the highest priority level among the backlogs
-- given (docs/QUEUES.md), and on a tie the one named first (the
-- distributor rotates the order between calls, so equal queues and classes
-- take turns). Within a level, oldest first.
-- The worker's credit (capacity - used) and each queue's pause, concurrency
-- limit (`run` against `conc`) and token bucket (`rate` per second up to
-- `burst`, refilled from Redis time) are checked here, inside the script,
-- so every distributor obeys them at once and two distributors can never
-- over-fill one worker or a queue's limit. Nothing is charged for a task
-- left in its list: a limit only leaves it where it is.
-- A cancelled task's id stays in its list until a call pops it here, and
-- is dropped then (lazy removal; it is no longer `queued`).
-- The lease is one for every task of the call (a batch): the token
-- `<epoch>.<batch number>` (the number from INCR of the batch counter:
-- global, only rising), one record `P b:<token>` with the worker (`w`),
-- the assign entry (`ent`), the tasks still running (`n`) and their ids
-- (`ids`, comma-joined), and one deadline in the leases zset. Each task
-- stores only `state`, `v`, `att` (charged now), `st` (lease start) and
-- `b` (the token) (docs/BATCH-LEASES.md).
-- The envelope goes on the worker's stream with two unsigned fields: the
-- token `b` and the ids `ids`. The worker trusts them only through the
-- record, which must be its own and name the very entry it read (a
-- replayed or forged entry is another entry), and accepts a task only if it
-- is running with this token.
-- A new epoch begins whenever this Redis process is not the one that made
-- the current epoch (see current_epoch in the prelude).
local prefix, envelope, lease, wid, want = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local w = redis.call('HMGET', KEYS[1], 'cap', 'used', 'draining')
if not w[1] or w[3] == '1' then return { 0, 'gone', '' } end
local credit = tonumber(w[1]) - tonumber(w[2] or '0')
local need = math.min(want, credit)
if need <= 0 then return { 0, 'full', '' } end
local now = now_ms()

-- Why a queue gave all this call may take from it: its bucket ran dry,
-- or its concurrency limit was reached.
local function limit_reached(r)
  if r.tokens and r.tokens - r.taken < 1 then
    return 'rate:' .. int(math.ceil((1 - (r.tokens - r.taken)) * 1000 / r.rate))
  end
  return 'busy'
end

-- What each queue allows this call to take: its room, and why none.
local rooms = {}
local function room_of(q)
  local m = redis.call('HMGET', meta_key(prefix, q), 'paused', 'conc', 'run', 'rate', 'burst', 'tokens', 'refill')
  local r = { room = need, taken = 0 }
  if m[1] == '1' then
    r.room, r.why = 0, 'paused'
    return r
  end
  if m[2] then
    r.room = math.min(r.room, tonumber(m[2]) - tonumber(m[3] or '0'))
    if r.room <= 0 then
      r.room, r.why = 0, 'busy'
      return r
    end
  end
  if m[4] then
    -- A token bucket: `rate` tokens a second, at most `burst`, refilled
    -- from Redis time since `refill`. Written back only when spent.
    local rate, burst = tonumber(m[4]), tonumber(m[5] or m[4])
    local tokens = math.min(burst, tonumber(m[6] or burst) + (now - tonumber(m[7] or now)) * rate / 1000)
    r.tokens, r.rate = tokens, rate
    r.room = math.min(r.room, math.floor(tokens))
    if r.room <= 0 then r.room, r.why = 0, limit_reached(r) end
  end
  return r
end

local backlogs = {}
for i = 6, #ARGV do
  local q, class = string.match(ARGV[i], '^(%S+) (%S+)$')
  rooms[q] = rooms[q] or room_of(q)
  backlogs[#backlogs + 1] = { q = q, class = class, pair = ARGV[i], position = i - 5 }
end

local taken_ids, taken_keys, taken_fields = {}, {}, {}
-- Ids taken in this call: a task is marked running only after the loop,
-- so an id found twice in the lists (pushed again by a bug or by hand)
-- would otherwise read `queued` twice and take two slots.
local seen = {}
-- Ids popped that are no longer queued cost a pop each: a call pops at
-- most this many in all, so a list of cancelled ids is drained over calls.
local budget = 4 * need + 100
while need > 0 and budget > 0 do
  local best
  for _, b in ipairs(backlogs) do
    if not b.why then
      local r = rooms[b.q]
      if r.room <= 0 then
        b.why = r.why or limit_reached(r)
      else
        if not b.level then
          local top = redis.call('ZREVRANGE', levels_key(prefix, b.q, b.class), 0, 0)
          if top[1] then
            b.level = tonumber(top[1])
          else
            b.why = 'empty'
            redis.call('SREM', prefix .. 'active', b.pair)
          end
        end
        if b.level and (not best or b.level > best.level) then best = b end
      end
    end
  end
  if not best then break end
  local r = rooms[best.q]
  local n = math.min(need, r.room, budget)
  local ids = redis.call('LPOP', ready_key(prefix, best.q, best.class, best.level), n) or {}
  budget = budget - n
  if #ids < n then
    -- The list is empty now: its level goes, and the next turn looks at
    -- the next level down.
    redis.call('ZREM', levels_key(prefix, best.q, best.class), best.level)
    best.level = nil
  end
  for _, id in ipairs(ids) do
    local key = task_key(prefix, id)
    local t = redis.call('HMGET', key, 'state', 'v', 'att')
    if t[1] == 'queued' and not seen[id] then
      seen[id] = true
      local j = #taken_ids + 1
      taken_ids[j], taken_keys[j], taken_fields[j] = id, key, t
      need, r.room, r.taken = need - 1, r.room - 1, r.taken + 1
    end
  end
end

local ids = table.concat(taken_ids, ',')
-- 'full' only when the worker's slots are all taken, not when the call
-- took all it asked for: a worker with more room than one call asks for
-- is still offered more.
local reply = { int(#taken_ids), credit - #taken_ids > 0 and 'room' or 'full', ids }
for _, b in ipairs(backlogs) do
  if b.why then reply[#reply + 1], reply[#reply + 2] = int(b.position), b.why end
end
local taken = #taken_ids
if taken == 0 then return reply end
local now_s, deadline = int(now), int(now + tonumber(lease))
local number = redis.call('INCR', KEYS[6])
-- A fresh counter (a new Redis, or the first assign of this layout) gives
-- numbers an earlier token may already hold: a new epoch keeps them apart.
local token = current_epoch(KEYS[5], now, number == 1) .. '.' .. int(number)
local ent = redis.call('XADD', KEYS[2], '*', 'm', envelope, 'b', token, 'ids', ids)
-- `ut` is not written here: `st` is the time of this change, and readers
-- take the later of the two (one field less in the hottest write).
for j = 1, taken do
  local t = taken_fields[j]
  redis.call('HSET', taken_keys[j], 'state', 'running', 'v', int(t[2] + 1), 'att', int((t[3] or 0) + 1),
    'st', now_s, 'b', token)
end
redis.call('HSET', batch_key(prefix, token), 'w', wid, 'ent', ent, 'n', int(taken), 'ids', ids)
redis.call('ZADD', KEYS[3], deadline, token)
redis.call('HINCRBY', KEYS[1], 'used', taken)
redis.call('HINCRBY', KEYS[4], 'queued', -taken)
redis.call('HINCRBY', KEYS[4], 'running', taken)
for q, r in pairs(rooms) do
  if r.taken > 0 then
    local meta = meta_key(prefix, q)
    redis.call('HINCRBY', meta, 'queued', -r.taken)
    redis.call('HINCRBY', meta, 'run', r.taken)
    if r.tokens then redis.call('HSET', meta, 'tokens', tostring(r.tokens - r.taken), 'refill', now_s) end
  end
end
return reply
