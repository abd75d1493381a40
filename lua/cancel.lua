-- cancel.lua — cancel one task (queued | scheduled → cancelled; running →
-- cancel requested, and the worker is told).
-- KEYS[1] scheduled zset     KEYS[2] counts hash        KEYS[3] events stream
-- ARGV[1] key prefix         ARGV[2] task id            ARGV[3] expected version
-- ARGV[4] signed events envelope   ARGV[5] events MAXLEN
-- ARGV[6] worker id the caller saw holding the task (from its batch
--         record; '' if none)
-- ARGV[7] signed cancel envelope for that worker's stream ('' if none)
-- Reply: { status, state }: status 'cancelled' | 'requested' (running: the
--        worker aborts the handler and reports) | 'terminal' (already ended;
--        state says how) | 'missing' | 'conflict' (the version moved on: read
--        again and retry).
-- The worker stream is derived from the worker id, under the same hash tag.
-- A running task's worker is the one its batch record (`b`) names.
local prefix, id, expected = ARGV[1], ARGV[2], ARGV[3]
local key = task_key(prefix, id)
local t = redis.call('HMGET', key, 'state', 'v', 'b', 'q', 'uq', 'uw')
if not t[1] then return { 'missing', '' } end
local state = t[1]
if state == 'succeeded' or state == 'dead' or state == 'cancelled' then return { 'terminal', state } end
if t[2] ~= expected then return { 'conflict', state } end
local now = now_ms()
if state == 'running' then
  local holder = t[3] and redis.call('HGET', batch_key(prefix, t[3]), 'w')
  if (holder or '') ~= ARGV[6] then return { 'conflict', state } end
  redis.call('HSET', key, 'cr', 1, 'ut', now)
  -- A worker the janitor forgot has no stream to tell; its lease expires
  -- and the reaper, seeing the request, cancels the task.
  if redis.call('EXISTS', worker_key(prefix, ARGV[6])) == 1 then
    append(worker_key(prefix, ARGV[6]) .. ':in', ARGV[7])
  end
  return { 'requested', state }
end
-- A queued task's id stays in its ready list: assign.lua drops it when it
-- pops it (lazy removal: an LREM would walk the list).
if state == 'scheduled' then redis.call('ZREM', KEYS[1], id) end
if state == 'queued' then lower_count(meta_key(prefix, t[4]), 'queued', 1) end
redis.call('HINCRBY', KEYS[2], state, -1)
finish(key, id, t[4], 'cancelled', now, tonumber(t[2]) + 1, nil, nil, t[5], t[6])
file_finished(prefix, now)
append(KEYS[3], ARGV[4], ARGV[5])
return { 'cancelled', 'cancelled' }
