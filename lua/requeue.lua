-- requeue.lua — put queued tasks into their ready lists (queued → queued,
-- new version). The leader's reconciler uses it for queued tasks that no
-- list holds: those written by builds whose backlog was the intake stream
-- (they carry that stream's entry id, `ent`, which this removes), so an
-- upgrade loses none of them.
-- KEYS: none. Every key is named from the prefix: the task hashes here,
--       and through the prelude (enqueue_later, file_enqueued) the ready
--       lists, levels, `P active`, `P backlogs`, the queues' meta hashes
--       and `P wake`, all under one hash tag.
-- ARGV[1] key prefix
-- ARGV[2..] 2 per task: id, expected version
-- Reply: flat array, one per task: 'queued' | 'conflict' | 'state:<s>' | 'missing'
local prefix = ARGV[1]
local now = now_ms()
local reply, queued = {}, 0
for i = 2, #ARGV, 2 do
  local id, expected = ARGV[i], ARGV[i + 1]
  local key = task_key(prefix, id)
  local t = redis.call('HMGET', key, 'state', 'v', 'q', 'h', 'tags', 'prio')
  if not t[1] then
    reply[#reply + 1] = 'missing'
  elseif t[1] ~= 'queued' then
    reply[#reply + 1] = 'state:' .. t[1]
  elseif t[2] ~= expected then
    reply[#reply + 1] = 'conflict'
  else
    redis.call('HDEL', key, 'ent')
    redis.call('HSET', key, 'v', tonumber(t[2]) + 1, 'ut', now)
    enqueue_later(id, t[3], t[4], t[5], t[6])
    -- file_enqueued raises the queue's meta count of queued tasks: a task
    -- queued by an earlier build was never counted there. (P counts
    -- already holds it as queued, so it is not raised again.)
    queued = queued + 1
    reply[#reply + 1] = 'queued'
  end
end
if queued > 0 then file_enqueued(prefix) end
return reply
