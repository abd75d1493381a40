-- complete.lua — a worker reports how attempts ended (running → succeeded |
-- scheduled (retry) | dead | cancelled | queued (handed back)).
-- KEYS[1] leases zset        KEYS[2] scheduled zset     KEYS[3] counts hash
-- KEYS[4] worker hash        KEYS[5] events stream
-- ARGV[1] key prefix         ARGV[2] worker id          ARGV[3] result TTL ms
-- ARGV[4] '1' to file succeeded tasks in their queue's index, '0' for the
--         expiry lists (limits.index_succeeded; prelude, finish)
-- ARGV[5] signed events envelope naming the tasks      ARGV[6] events MAXLEN
-- ARGV[7..] runs of attempts that ended the same way under one lease: a
--           header of 3 — outcome ('ok' | 'fail' | 'cancelled' | 'release'),
--           the batch's fencing token, number of tasks n — then per task:
--           id, result JSON or error text, and for 'fail' a 3rd, the retry
--           delay ms.
--           (Runs keep the call small: most of a call's cost per task in
--           Redis is its arguments and reply.)
-- Reply: flat array, 2 per task whose new state is not 'succeeded': its
--        position in the call (1-based, over all runs), and the new state
--        ('scheduled', 'dead', 'cancelled', 'queued') or 'stale' when the
--        caller no longer holds the lease (wrong state or token, or the
--        batch is not this worker's): a zombie worker's late completion
--        changes nothing.
-- Each run retires its tasks from the batch record (`retire` in the
-- prelude): the record and its deadline go with the batch's last task.
-- 'release' hands a task back without charging an attempt (graceful
-- shutdown); it is queued again at the tail of its ready list, unless a
-- cancel was requested meanwhile: then it is cancelled.
-- Each queue's running count (`run` in `P q:<queue>:meta`, against its
-- concurrency limit) is lowered once per queue and call.
local prefix, wid = ARGV[1], ARGV[2]
finish_succeeded_into(ARGV[4] == '1', ARGV[3])
local now = int(now_ms())
local reply, deltas, changed = {}, {}, 0
local i, position = 7, 0
while i <= #ARGV do
  local outcome, token, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local per_task = outcome == 'fail' and 3 or 2
  i = i + 3
  -- A batch is one worker's: the record names it once for the whole run.
  local ours = redis.call('HGET', batch_key(prefix, token), 'w') == wid
  local ended = 0
  for _ = 1, n do
    local id, payload = ARGV[i], ARGV[i + 1]
    local delay = per_task == 3 and ARGV[i + 2]
    i, position = i + per_task, position + 1
    local key = task_key(prefix, id)
    -- Only the fields every outcome needs: a field the hash does not hold
    -- (`cr`, usually) costs a scan of the whole hash.
    local t = ours and redis.call('HMGET', key, 'state', 'b', 'v', 'q', 'uq', 'uw')
    local state
    if not t or t[1] ~= 'running' or t[2] ~= token then
      state = 'stale'
    else
      local v = int(t[3] + 1)
      ended = ended + 1
      stopped_running(t[4], 1)
      local back = outcome == 'release' and redis.call('HMGET', key, 'cr', 'att', 'h', 'tags', 'prio')
      if outcome == 'ok' then
        finish(key, id, t[4], 'succeeded', now, v, 'res', payload, t[5], t[6])
        state = 'succeeded'
      elseif outcome == 'cancelled' or (back and back[1] == '1') then
        finish(key, id, t[4], 'cancelled', now, v, nil, nil, t[5], t[6])
        state = 'cancelled'
      elseif back then
        redis.call('HSET', key, 'state', 'queued', 'v', v, 'att', int(back[2] - 1), 'ut', now)
        bump(deltas, 'queued', 1)
        enqueue_later(id, t[4], back[3], back[4], back[5])
        state = 'queued'
      else
        state = settle_failure(key, id, now, delay, v, payload, deltas, KEYS[2])
      end
    end
    if state ~= 'succeeded' then reply[#reply + 1], reply[#reply + 2] = int(position), state end
  end
  bump(deltas, 'running', -ended)
  retire(prefix, KEYS[1], token, ended)
  changed = changed + ended
end
if changed > 0 then
  release_slots(prefix, wid, changed)
  flush_counts(KEYS[3], deltas)
  append(KEYS[5], ARGV[5], ARGV[6])
  file_stopped(prefix)
  file_enqueued(prefix)
  file_finished(prefix, now)
end
return reply
