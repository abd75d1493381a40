-- restore.lua — write tasks read from a snapshot into this Redis (snapshot
-- import). Live tasks come back runnable: queued (in their ready list) unless they
-- were scheduled, which keep their run_at. Attempts, ids, inputs and the
-- token of the last lease (`b`, shown as the task's fence) are kept; the
-- worker and entry fields are dropped, since no worker holds anything in
-- the new Redis and its streams are new. A live task leaves `running`
-- here, so nothing reads its old `b` as a lease. A live task whose cancel
-- was requested (`cr`, set while it ran) is not run again: it ends
-- cancelled here, as the reaper would have ended it once its lease ran out.
-- Terminal tasks keep their result for the result TTL from now: they are
-- filed as if they finished at the import.
-- KEYS[1] scheduled zset     KEYS[2] counts hash
-- ARGV[1] key prefix         ARGV[2] result TTL ms
-- ARGV[3] '1' to file succeeded tasks in their queue's index, '0' for the
--         expiry lists (limits.index_succeeded)
-- ARGV[4..] 2 per task: id, the task's fields as a JSON object (strings)
-- Reply: flat array, 2 per task: id, 'queued' | 'scheduled' | 'terminal' |
--        'cancelled' (live, with a cancel requested) | 'exists' (a task with
--        this id is already here: left alone)
local prefix = ARGV[1]
finish_succeeded_into(ARGV[3] == '1', ARGV[2])
local now = now_ms()
local reply, deltas = {}, {}
local drop = { w = true, ent = true, cr = true }
for i = 4, #ARGV, 2 do
  local id, fields = ARGV[i], cjson.decode(ARGV[i + 1])
  local key = task_key(prefix, id)
  local outcome
  if redis.call('EXISTS', key) == 1 then
    outcome = 'exists'
  else
    local state = fields['state']
    local args = {}
    for k, v in pairs(fields) do
      if not drop[k] then
        args[#args + 1] = k
        args[#args + 1] = v
      end
    end
    redis.call('HSET', key, unpack(args))
    local v = tonumber(fields['v'] or '0') + 1
    -- A live task holds its unique key here too (unless another does).
    if fields['uq'] and state ~= 'succeeded' and state ~= 'dead' and state ~= 'cancelled' then
      redis.call('SET', prefix .. 'uniq:' .. fields['uq'], id, 'NX')
    end
    if state == 'succeeded' or state == 'dead' or state == 'cancelled' then
      if state == 'succeeded' and not succeeded_indexed then
        expire_later(id, now)
      else
        index_later(id, fields['q'], state)
      end
      outcome = 'terminal'
    elseif fields['cr'] == '1' then
      -- The attempt the request was meant for died with the old Redis and
      -- is not charged.
      local att = tonumber(fields['att'] or '0')
      if state == 'running' then att = math.max(0, att - 1) end
      finish(key, id, fields['q'], 'cancelled', now, v, 'att', att, fields['uq'], fields['uw'])
      outcome = 'cancelled'
    elseif state == 'scheduled' then
      redis.call('HSET', key, 'v', v, 'ut', now)
      redis.call('ZADD', KEYS[1], tonumber(fields['run_at'] or '0'), id)
      bump(deltas, 'scheduled', 1)
      outcome = 'scheduled'
    else
      -- queued, assigned or running: the attempt in flight (if any) died
      -- with the old Redis and is not charged.
      if state == 'running' then
        redis.call('HSET', key, 'att', math.max(0, tonumber(fields['att'] or '1') - 1))
      end
      redis.call('HSET', key, 'state', 'queued', 'v', v, 'ut', now)
      bump(deltas, 'queued', 1)
      enqueue_later(id, fields['q'], fields['h'] or '', fields['tags'], fields['prio'])
      outcome = 'queued'
    end
  end
  reply[#reply + 1] = id
  reply[#reply + 1] = outcome
end
flush_counts(KEYS[2], deltas)
file_enqueued(prefix)
file_finished(prefix, now)
return reply
