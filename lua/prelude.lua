-- prelude.lua — helpers shared by every drover script.
-- Not a script of its own: src/store/scripts.rs prepends it to each script
-- below, so every transition uses the same key names, clock and bookkeeping.
-- KEYS/ARGV: none (it only defines local functions).
-- Reply: none.

-- Times come from Redis, never from the roles' clocks.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer as the string Redis stores. Redis formats a Lua number given
-- to redis.call with "%.17g", which goes through glibc's float printing and
-- showed up in profiles; "%d" is the plain integer path. Hot scripts format
-- each number once and pass strings.
local function int(x) return string.format('%d', x) end

-- The fencing epoch, begun anew whenever this Redis process is not the one
-- that made the current epoch (a restart, which may have lost the last
-- writes, or a failover to a replica), so a token issued before a data loss
-- never equals one issued after. Epochs rise even if the clock stepped back.
-- `fresh` asks for a new epoch as well (the batch counter began again).
-- `INFO server` costs about 10 µs: callers read it once per batch.
local function current_epoch(epoch_key, now, fresh)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  local current = redis.call('HMGET', epoch_key, 'epoch', 'run')
  local epoch = current[1]
  if fresh or not epoch or current[2] ~= run then
    epoch = int(math.max(now, tonumber(epoch or '0') + 1))
    redis.call('HSET', epoch_key, 'epoch', epoch, 'run', run)
  end
  return epoch
end

-- What a task hash without `max` or `to` means (mirrored by
-- task::UNSTORED_MAX_ATTEMPTS and task::UNSTORED_TIMEOUT_MS). submit.lua
-- stores neither when both are at these values (16 bytes less per queued
-- task), and every reader takes these for a missing field. (Readers did so
-- from f72998f, before submit stopped storing them in 1cd0787: see
-- docs/DEPLOYMENT.md, Upgrades.)
local UNSTORED_MAX = '3'
local UNSTORED_TIMEOUT_MS = '300000'

-- Key templates, mirrored by src/store/keys.rs. Every key shares the
-- prefix's hash tag, so a script only ever touches one cluster slot.
local function task_key(prefix, id) return prefix .. 't:' .. id end
local function worker_key(prefix, wid) return prefix .. 'w:' .. wid end
-- The record of one assign batch's lease, named by its fencing token.
local function batch_key(prefix, token) return prefix .. 'b:' .. token end

-- Ends the lease record of a batch once none of its tasks runs under it:
-- `k` of them just stopped running. The record and its deadline go when
-- the count reaches 0.
local function retire(prefix, leases_key, token, k)
  if k <= 0 then return end
  local key = batch_key(prefix, token)
  if tonumber(redis.call('HINCRBY', key, 'n', -k)) <= 0 then
    redis.call('DEL', key)
    redis.call('ZREM', leases_key, token)
  end
end

-- Backlog counters: collect deltas per state, write each once.
local function bump(deltas, state, n)
  deltas[state] = (deltas[state] or 0) + n
end
local function flush_counts(counts_key, deltas)
  for state, n in pairs(deltas) do
    if n ~= 0 then redis.call('HINCRBY', counts_key, state, n) end
  end
end

-- Gives a worker back the `k` slots tasks held. A worker forgotten by the
-- janitor has no hash any more; HINCRBY must not bring it back.
local function release_slots(prefix, wid, k)
  if not wid or wid == '' or k <= 0 then return end
  local key = worker_key(prefix, wid)
  if redis.call('EXISTS', key) == 1 then
    if tonumber(redis.call('HINCRBY', key, 'used', -k)) < 0 then
      redis.call('HSET', key, 'used', 0)
    end
  end
end

-- Lua's unpack() takes a few thousand values at most: a variadic command
-- over a big batch goes in chunks.
local CHUNK = 1000
local function zrem_many(key, members)
  for i = 1, #members, CHUNK do
    redis.call('ZREM', key, unpack(members, i, math.min(i + CHUNK - 1, #members)))
  end
end

-- Queues. A task names its queue in `q`, stored only when it is not
-- `default` (memory per queued task); every reader takes a missing `q` as
-- 'default'. A queue's own keys share the sub-prefix `P q:<queue>:`, so a
-- later layout can give each queue partition a hash tag of its own.
local DEFAULT_QUEUE = 'default'
local function queue_of(q) return (q and q ~= '') and q or DEFAULT_QUEUE end
local function queue_key(prefix, q, name) return prefix .. 'q:' .. queue_of(q) .. ':' .. name end
-- A queue's finished tasks of one state, id -> finish ms (docs/QUEUES.md).
local function index_key(prefix, q, state) return queue_key(prefix, q, 'idx:' .. state) end
-- The names of every queue that has had a task (`P queues`).
local function queues_key(prefix) return prefix .. 'queues' end

-- Finished tasks get no TTL of their own: a PEXPIRE per task cost about
-- 1.8 µs of Redis per task (BENCHMARKS.md). `finish` notes the task's id
-- under its queue and state; the script ends with `file_finished`, which
-- adds the ids of the call to `P q:<queue>:idx:<state>` in one ZADD per
-- queue and state, scored by the finish time. That index serves listing,
-- counting and purging a queue's finished tasks, and the leader's
-- expire.lua deletes from its low end the tasks whose result TTL has
-- passed.
-- Succeeded tasks, the most numerous by far, are indexed only when
-- `limits.index_succeeded` is on (an index member costs about 126 bytes and
-- 1-2 µs of Redis per task, docs/QUEUES.md); otherwise their ids go, as
-- before the indexes, into a list per second their result expires,
-- `P done:<second>`, noted in the sorted set `P done`, which expire.lua
-- empties once the second has begun. A script that can finish a task
-- `succeeded` says which, with its TTL, through `finish_succeeded_into`.
local finished = {}
local succeeded_indexed, succeeded_ttl = true, nil
local function finish_succeeded_into(indexed, ttl_ms)
  succeeded_indexed, succeeded_ttl = indexed, ttl_ms
end
local expiring = {}
-- A call finishes its tasks with one `now` and one TTL: the list they go
-- to is found once.
local last_now, last_expiring
local function expire_later(id, now)
  if now ~= last_now then
    -- Rounded up: expire.lua deletes a second's tasks once it has begun.
    local second = int(math.ceil((tonumber(now) + tonumber(succeeded_ttl)) / 1000))
    last_now, last_expiring = now, expiring[second]
    if not last_expiring then
      last_expiring = {}
      expiring[second] = last_expiring
    end
  end
  last_expiring[#last_expiring + 1] = id
end
-- Unique keys held by tasks finished in this call: { key, window end }.
local unlocked = {}
-- A call finishes its tasks with one `now`: consecutive tasks of one queue
-- and state go to the same list without a table lookup each.
local last_group, last_ids
local function index_later(id, q, state)
  local group = queue_of(q) .. ' ' .. state
  if group ~= last_group then
    last_group, last_ids = group, finished[group]
    if not last_ids then
      last_ids = {}
      finished[group] = last_ids
    end
  end
  last_ids[#last_ids + 1] = id
end
-- A task submitted with a `unique_key` holds `P uniq:<key>` (its id)
-- while it is live and, when it was given `unique_for`, until that window
-- ends (`uw`, ms): at its finish the key goes, or expires at the window's
-- end, if it still names this task.
local function unlock_later(id, uq, uw)
  if uq then unlocked[#unlocked + 1] = { id, uq, tonumber(uw or '0') } end
end
local function file_finished(prefix, now)
  for second, ids in pairs(expiring) do
    for i = 1, #ids, CHUNK do
      redis.call('RPUSH', prefix .. 'done:' .. second, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    end
    redis.call('ZADD', prefix .. 'done', second, second)
  end
  for _, u in ipairs(unlocked) do
    local lock = prefix .. 'uniq:' .. u[2]
    if redis.call('GET', lock) == u[1] then
      if u[3] > tonumber(now) then
        redis.call('PEXPIREAT', lock, u[3])
      else
        redis.call('DEL', lock)
      end
    end
  end
  local score = int(now)
  for group, ids in pairs(finished) do
    local q, state = string.match(group, '^(%S+) (%S+)$')
    local key = index_key(prefix, q, state)
    for i = 1, #ids, CHUNK do
      local args = {}
      for j = i, math.min(i + CHUNK - 1, #ids) do
        args[#args + 1], args[#args + 2] = score, ids[j]
      end
      redis.call('ZADD', key, unpack(args))
    end
  end
end

-- Ends a task: terminal state, finish time, the id filed in its queue's
-- index of that state (above: the caller must end with `file_finished`).
-- `field`/`value` (optional) is one more field written in the same HSET:
-- the result or the error. `now` and `v` may be numbers or strings; `q`,
-- `uq` and `uw` are the task's fields of those names (nil when unset: the
-- default queue, no unique key).
-- `b` (the batch token of the last lease) and `st` stay, for the API.
-- `ut` is not written: `fin` is the time of this last change, and readers
-- take the latest of `ut`, `st` and `fin`.
local function finish(key, id, q, state, now, v, field, value, uq, uw)
  if field then
    redis.call('HSET', key, 'state', state, 'v', v, 'fin', now, field, value)
  else
    redis.call('HSET', key, 'state', state, 'v', v, 'fin', now)
  end
  if state == 'succeeded' and not succeeded_indexed then
    expire_later(id, now)
  else
    index_later(id, q, state)
  end
  unlock_later(id, uq, uw)
end

-- The backlog (docs/QUEUES.md, "The backlog as built"). A queued task's id
-- waits in a ready list of its queue, class and priority level:
--   P q:<queue>:ready:<class>:<level>   list, oldest first
--   P q:<queue>:levels:<class>          zset of the levels whose list may hold ids
--   P active                            set of '<queue> <class>' pairs with ready ids
--   P backlogs                          hash '<queue> <class>' -> '<handler> <tags JSON>'
--   P q:<queue>:meta                    hash: queued, run, paused, draining, conc,
--                                       rate, burst, tokens, refill
--   P wake                              stream: one entry per call that queued tasks
-- A class is a handler and its required tags: a worker can run either every
-- task of a class or none, so assign.lua takes only from the classes the
-- worker offers and never walks past a task it cannot place.
-- Invariant: a non-empty list's level is in its `levels` set, and a pair
-- with a level is in `active` (both are added when a list goes from empty
-- to not, and removed by assign.lua only once it finds the list empty).
-- Priorities from LEVEL_MIN to LEVEL_MAX are kept apart; beyond them a
-- task counts as the nearest end (docs/QUEUES.md, "The backlog as built").
local LEVEL_MIN, LEVEL_MAX = -10, 10
local function level_of(prio)
  local p = math.floor(tonumber(prio or '0') or 0)
  if p < LEVEL_MIN then return LEVEL_MIN end
  if p > LEVEL_MAX then return LEVEL_MAX end
  return p
end
-- A short stable name for (handler, tags): the first 12 hex digits of a
-- SHA-1, so list keys stay short whatever the tags.
local function class_of(handler, tags)
  return string.sub(redis.sha1hex(handler .. ' ' .. (tags or '[]')), 1, 12)
end
local function meta_key(prefix, q) return queue_key(prefix, q, 'meta') end
local function levels_key(prefix, q, class) return queue_key(prefix, q, 'levels:' .. class) end
local function ready_key(prefix, q, class, level)
  return queue_key(prefix, q, 'ready:' .. class .. ':' .. level)
end
local WAKE_MAXLEN = '1000'

-- Ids to put in ready lists at the end of the call (`file_enqueued`),
-- grouped by queue, handler, tags and level: one RPUSH per group.
local enqueued, enqueued_order = {}, {}
local function enqueue_later(id, q, handler, tags, prio)
  q, tags = queue_of(q), tags or '[]'
  local level = level_of(prio)
  local group = q .. '\n' .. handler .. '\n' .. tags .. '\n' .. level
  local g = enqueued[group]
  if not g then
    g = { q = q, h = handler, tags = tags, level = level, ids = {} }
    enqueued[group] = g
    enqueued_order[#enqueued_order + 1] = g
  end
  g.ids[#g.ids + 1] = id
end
-- Writes what enqueue_later collected, counts each queue's queued tasks,
-- and wakes the distributors once. Returns how many ids were queued.
local function file_enqueued(prefix)
  local total, per_queue = 0, {}
  for _, g in ipairs(enqueued_order) do
    local class = class_of(g.h, g.tags)
    local list = ready_key(prefix, g.q, class, g.level)
    local len, pushed = 0, #g.ids
    for i = 1, pushed, CHUNK do
      len = redis.call('RPUSH', list, unpack(g.ids, i, math.min(i + CHUNK - 1, pushed)))
    end
    if len == pushed then
      -- The list was empty: its level, its pair and the pair's class
      -- description may be missing.
      local pair = g.q .. ' ' .. class
      redis.call('ZADD', levels_key(prefix, g.q, class), g.level, g.level)
      redis.call('SADD', prefix .. 'active', pair)
      redis.call('HSETNX', prefix .. 'backlogs', pair, g.h .. ' ' .. g.tags)
    end
    per_queue[g.q] = (per_queue[g.q] or 0) + pushed
    total = total + pushed
  end
  for q, n in pairs(per_queue) do redis.call('HINCRBY', meta_key(prefix, q), 'queued', n) end
  if total > 0 then redis.call('XADD', prefix .. 'wake', 'MAXLEN', '~', WAKE_MAXLEN, '*', 'n', int(total)) end
  return total
end

-- Tasks that stopped running, per queue: each queue's `run` (its running
-- count, which its concurrency limit is checked against) is lowered once
-- per call.
local stopped = {}
-- Lowers a count in a queue's meta hash by n, never below 0. Tasks of an
-- earlier build were never counted there (their attempt began before
-- `run` existed, or they waited in the intake stream), so their ends
-- must not take the count below what the new layout counted: a negative
-- `run` would let that many extra tasks past a concurrency limit.
local function lower_count(key, field, n)
  if redis.call('HINCRBY', key, field, -n) < 0 then redis.call('HSET', key, field, 0) end
end

local function stopped_running(q, n)
  q = queue_of(q)
  stopped[q] = (stopped[q] or 0) + n
end
local function file_stopped(prefix)
  for q, n in pairs(stopped) do
    if n ~= 0 then lower_count(meta_key(prefix, q), 'run', n) end
  end
end

-- Appends one signed envelope (bytes made in Rust) to a stream; returns
-- the entry id (nil when there is no envelope).
local function append(stream, envelope, maxlen)
  if envelope == nil or envelope == '' then return nil end
  if maxlen and tonumber(maxlen) > 0 then
    return redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'm', envelope)
  end
  return redis.call('XADD', stream, '*', 'm', envelope)
end

-- What happens to a task whose attempt ended without success: cancelled if
-- a cancel was requested, retried after `delay_ms` while attempts remain,
-- else dead. `err` is written with the new state. Returns the new state.
-- The caller has already checked state, version and token, and retires
-- the task from its batch's lease.
local function settle_failure(key, id, now, delay_ms, v, err, deltas, scheduled_key)
  local f = redis.call('HMGET', key, 'cr', 'att', 'max', 'q', 'uq', 'uw')
  if f[1] == '1' then
    finish(key, id, f[4], 'cancelled', now, v, 'err', err, f[5], f[6])
    return 'cancelled'
  end
  if tonumber(f[2] or '0') < tonumber(f[3] or UNSTORED_MAX) then
    local run_at = int(now + tonumber(delay_ms))
    redis.call('HSET', key, 'state', 'scheduled', 'v', v, 'run_at', run_at, 'ut', now, 'err', err)
    redis.call('ZADD', scheduled_key, run_at, id)
    bump(deltas, 'scheduled', 1)
    return 'scheduled'
  end
  finish(key, id, f[4], 'dead', now, v, 'err', err, f[5], f[6])
  return 'dead'
end
