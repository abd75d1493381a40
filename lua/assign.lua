-- assign.lua — place a batch of queued tasks on one worker and take one
-- lease for all of them there (queued → running).
-- KEYS[1] worker hash        KEYS[2] worker stream      KEYS[3] leases zset
-- KEYS[4] counts hash        KEYS[5] epoch hash (epoch, run: the Redis
--                                    run_id it was made under)
-- KEYS[6] intake stream      KEYS[7] batch counter
-- ARGV[1] key prefix         ARGV[2] signed assign envelope (task ids with the
--                                    versions they will have once assigned)
-- ARGV[3] lease TTL ms       ARGV[4] worker id
-- ARGV[5] the distributors' consumer group on the intake stream
-- ARGV[6..] runs of tasks named with one intake entry: a header of 2 — the
--           entry to acknowledge ('' = none; given when this call holds
--           every task of that entry the caller still has to place) and
--           the number of tasks n — then n × 2: id, expected version.
--           (Runs keep the call small: most of a call's cost per task in
--           Redis is its arguments and reply.)
-- Reply: flat array, 2 per task that was not assigned: its position in the
--        call (1-based, over all runs) and its status: 'full' | 'missing' |
--        'gone' (worker unknown or draining) | 'conflict' (version, or named twice) |
--        'state:<s>'. Every task not listed is 'ok'.
-- The worker's credit (capacity - used) is checked here, inside the script,
-- so two distributors can never over-fill one worker. The lease is taken
-- here, not by the worker, and it is one lease for every task of the call
-- (a batch): the token `<epoch>.<batch number>` (the number from INCR of
-- the batch counter: global, only rising), one record `P b:<token>` with
-- the worker (`w`), the assign entry (`ent`), the tasks still running
-- (`n`) and their ids (`ids`, comma-joined, for the reaper), and one
-- deadline in the leases zset. Each task stores only `state`, `v`, `att`
-- (charged now), `st` (lease start) and `b` (the token): the fields that
-- are the same for the whole batch are written once (docs/BATCH-LEASES.md).
-- The envelope goes on the worker's stream with the token as a second,
-- unsigned field `b` (the distributor signs before the number exists).
-- The worker only reads the record and the tasks (no script, no write)
-- when the entry reaches it, and accepts a task only if the record is its
-- own, names the entry it read (a replayed copy is another entry, and a
-- forged `b` names another batch's entry), and the task is running at the
-- version with this token.
-- The envelope is appended only if at least one task was assigned; entries
-- in it for tasks that were not are refused by the worker.
-- An intake entry named with its tasks is acknowledged here, saving the
-- distributor a round trip, once none of its tasks got 'full' or 'gone'
-- (those still wait); every other status settles the task.
-- A new epoch begins whenever this Redis process is not the one that made
-- the current epoch (see current_epoch in the prelude).
local prefix, envelope, lease, wid, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local reply = {}
local w = redis.call('HMGET', KEYS[1], 'cap', 'used', 'draining')
local gone = not w[1] or w[3] == '1'
local free = gone and 0 or tonumber(w[1]) - tonumber(w[2] or '0')
local taken_ids, taken_keys, taken_fields = {}, {}, {}
-- Intake entries whose tasks here all settled are acknowledged; an entry
-- with a task that got 'full' or 'gone' still waits.
local entries, waits = {}, {}
-- A task named twice in one call (a copied intake entry read with the
-- original) is taken once: the second is a 'conflict'.
local taken_here = {}
local i, position = 6, 0
while i <= #ARGV do
  local entry, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  if entry ~= '' then entries[#entries + 1] = entry end
  for _ = 1, n do
    local id, expected = ARGV[i], ARGV[i + 1]
    i, position = i + 2, position + 1
    local status
    if gone then
      status = 'gone'
    else
      local key = task_key(prefix, id)
      local t = redis.call('HMGET', key, 'state', 'v', 'att')
      if not t[1] then
        status = 'missing'
      elseif t[1] ~= 'queued' then
        status = 'state:' .. t[1]
      elseif t[2] ~= expected or taken_here[id] then
        status = 'conflict'
      elseif free <= 0 then
        status = 'full'
      else
        local j = #taken_ids + 1
        taken_ids[j], taken_keys[j], taken_fields[j] = id, key, t
        taken_here[id] = true
        free = free - 1
      end
    end
    if status then
      reply[#reply + 1], reply[#reply + 2] = int(position), status
      if entry ~= '' and (status == 'full' or status == 'gone') then waits[entry] = true end
    end
  end
end
if gone then return reply end
local ack = {}
for _, entry in ipairs(entries) do
  if not waits[entry] then
    ack[#ack + 1] = entry
    waits[entry] = true -- once
  end
end
if #ack > 0 then redis.call('XACK', KEYS[6], group, unpack(ack)) end
local taken = #taken_ids
if taken == 0 then return reply end
local now = now_ms()
local now_s, deadline = int(now), int(now + tonumber(lease))
local number = redis.call('INCR', KEYS[7])
-- A fresh counter (a new Redis, or the first assign of this layout) gives
-- numbers an earlier token may already hold: a new epoch keeps them apart.
local token = current_epoch(KEYS[5], now, number == 1) .. '.' .. int(number)
local ent = redis.call('XADD', KEYS[2], '*', 'm', envelope, 'b', token)
-- `ut` is not written here: `st` is the time of this change, and readers
-- take the later of the two (one field less in the hottest write).
for j = 1, taken do
  local t = taken_fields[j]
  redis.call('HSET', taken_keys[j], 'state', 'running', 'v', int(t[2] + 1), 'att', int((t[3] or 0) + 1),
    'st', now_s, 'b', token)
end
redis.call('HSET', batch_key(prefix, token), 'w', wid, 'ent', ent, 'n', int(taken), 'ids', table.concat(taken_ids, ','))
redis.call('ZADD', KEYS[3], deadline, token)
redis.call('HINCRBY', KEYS[1], 'used', taken)
redis.call('HINCRBY', KEYS[4], 'queued', -taken)
redis.call('HINCRBY', KEYS[4], 'running', taken)
return reply
