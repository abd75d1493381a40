#!/usr/bin/env python3
"""What would docs/QUEUES.md's layout cost in Redis? The measurements of
that page's "Measurements" (its numbers of 2026-12-07 come from here), against layout-floor.py's `batch` (the
yardstick for today's scripts) on the same Redis, in turns:

1. CPU: µs of Redis per task, from `INFO commandstats`, for submit,
   assign, the worker's accept and complete, as layout-floor.py measures
   them (500 batches of 64 tasks per step; BATCHES= to change). Every run
   of a variant follows a run of `batch` and one of `batch-st` (batch with
   the lease start `st` written per task, as assign.lua and the queue
   layouts write it), and its ratios are to those runs (turns; medians
   over REPEATS). Variants:
   - q1:       one queue, one key, no limits (QUEUES.md's first variant);
   - q1-idx:   q1 with complete's `ZADD idx:succeeded` (and batch-idx:
               `batch` with it);
   - q1-turns: q1 without the one-key shortcut (`LPOP` with a count), so
               every task takes a fair turn: `ZRANGE` + `LPOP` + `ZINCRBY`;
   - q1000:    one queue, 1,000 keys, no limits (the fairness cost);
   - q1000-q4: q1000 with turns of up to 4 tasks (a quantum of 4);
   - q10x1000: 10 queues × 1,000 keys, each key with a concurrency limit
               (`keyconf:<k>`), each queue with a concurrency limit and a
               token bucket (none of them binding: the checks are paid,
               every task still runs);
   - zset:     q1's workload with one sorted set per class scored
               priority * 2^32 + seq (BullMQ's layout) instead of level lists.
   (The queue layouts' task input is `null`, batch's `{}`: 2 bytes.)
2. Memory per queued task (MEMORY_TASKS, default 100,000): task hashes as
   submit.lua writes them (state, v, h, in, ct, ent; 22-character base-62
   ids; the queue prefix `{drover:default:0}:`), in lists (1 key, and
   1,000 keys, whose tasks also hold `k`), in one sorted set per class,
   and as today (the hash plus an intake stream entry naming the ids); and
   what a member of `idx:<state>` costs per finished task.
4. The index page (QUEUES.md's measurement 4, Redis side; the fairness
   cost, its measurement 3, is q1 / q1-turns / q1000 / q1000-q4 above).
   The page (INDEX_TASKS finished task hashes, default 100,000, 1 in
   100 dead, and `idx:dead` with as many members): a page of 100 ids by
   `ZRANGE idx:dead (cursor +inf BYSCORE LIMIT 0 100`, against the walk
   today's API does to find 100 dead tasks (`SCAN MATCH t:* COUNT 1000`
   and an `HGETALL` of every key found, reads.rs `list_tasks`).

Before measuring, it checks that the queue scripts do what QUEUES.md says
(fair turns, weights, key limits, levels, pause, lazy removal of
cancelled ids, the sorted set's priority order): a script that skipped a
step would look cheaper than it is.

Usage: scripts/queue-layouts.py [REPEATS] [--big] [--parts=cpu,memory,index]
                                [--variants=q1,q1-idx,...]
Defaults: 3 repeats, all three parts, every variant. --big: 1,000,000
tasks for memory and the index page. Needs redis-server, and the `redis`
package (layout-floor.py installs it from PyPI when missing).
"""
import importlib.util
import os
import random
import statistics
import sys
import time

_spec = importlib.util.spec_from_file_location(
    "layout_floor", os.path.join(os.path.dirname(os.path.abspath(__file__)), "layout-floor.py"))
floor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(floor)
redis = floor.redis

BATCH, BATCHES, ENVELOPE, CLOCK = floor.BATCH, floor.BATCHES, floor.ENVELOPE, floor.CLOCK
BIG = "--big" in sys.argv
MEMORY_TASKS = int(os.environ.get("MEMORY_TASKS", 1_000_000 if BIG else 100_000))
INDEX_TASKS = int(os.environ.get("INDEX_TASKS", 1_000_000 if BIG else 100_000))
# --parts=cpu,memory,index (the default: all three) runs only some.
PARTS = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--parts=")), "cpu,memory,index").split(",")
# The CPU variants, in the order of their turns; --variants=q1,q1-idx runs some.
ORDER = ["q1", "batch-idx", "q1-idx", "q1-turns", "q1000", "q1000-q4", "q10x1000", "zset"]
VARIANTS_RUN = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--variants=")), ",".join(ORDER)).split(",")
LEVELS = 10

# submit: a task hash each, one RPUSH per run of tasks sharing (class, key,
# level). A list that was empty means the key (re-)enters its class and
# level's set, at the set's lowest virtual time, and the level enters the
# class's levels. A key whose list emptied may still be in the set (assign
# removes it when it finds the list empty): ZADD NX keeps its score then.
# ARGV[1] prefix, ARGV[2] wake entry, then runs: class, key, level, n, n ids.
Q_SUBMIT = CLOCK + """
local p = ARGV[1]
local ent = redis.call('XADD', p .. 'wake', 'MAXLEN', '~', 1000, '*', 'm', ARGV[2])
local nows = string.format('%d', now)
local i, total = 3, 0
while i <= #ARGV do
  local c, k, l, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  local ids = {}
  for j = 1, n do
    local id = ARGV[i + j - 1]
    ids[j] = id
    if k == '' then
      redis.call('HSET', p .. 't:' .. id, 'state', 'queued', 'v', '1', 'h', 'noop', 'in', 'null', 'ct', nows, 'ent', ent)
    else
      redis.call('HSET', p .. 't:' .. id, 'state', 'queued', 'v', '1', 'h', 'noop', 'in', 'null', 'ct', nows, 'ent', ent,
        'k', k)
    end
  end
  i = i + n
  if redis.call('RPUSH', p .. 'ready:' .. c .. ':' .. k .. ':' .. l, unpack(ids)) == n then
    local ks = p .. 'keys:' .. c .. ':' .. l
    local low = redis.call('ZRANGE', ks, 0, 0, 'WITHSCORES')
    redis.call('ZADD', ks, 'NX', low[2] or '0', k)
    if not low[1] then redis.call('ZADD', p .. 'levels:' .. c, 'NX', l, l) end
  end
  total = total + n
end
redis.call('HINCRBY', p .. 'meta', 'queued', total)
return total"""

# The part of assign both queue layouts share: the queue's flags and limits
# first (how many may start), the taken tasks' writes, the batch and the
# counts last. `run` in meta is the running count (the limit's and the
# API's: one field).
LIMITS = CLOCK + """
local p, wid = ARGV[1], ARGV[3]
local want = tonumber(ARGV[4])
local m = redis.call('HMGET', p .. 'meta', 'paused', 'conc', 'run', 'rate', 'burst', 'tokens', 'refill', 'klim')
if m[1] == '1' then return false end
if m[2] then want = math.min(want, tonumber(m[2]) - tonumber(m[3] or '0')) end
local tokens
if m[4] then
  tokens = math.min(tonumber(m[5]), tonumber(m[6] or m[5]) + (now - tonumber(m[7] or now)) * tonumber(m[4]) / 1000)
  want = math.min(want, math.floor(tokens))
end
if want <= 0 then return false end
local klim = m[8] == '1'
local taken_keys, taken_fields, taken_ids = {}, {}, {}
-- Takes the task if it is still queued: a cancelled task's id stays in its
-- list and is dropped here (lazy removal).
local function take(id)
  local key = p .. 't:' .. id
  local t = redis.call('HMGET', key, 'state', 'v', 'att')
  if t[1] ~= 'queued' then return false end
  local j = #taken_ids + 1
  taken_ids[j], taken_keys[j], taken_fields[j] = id, key, t
  return true
end
"""

RECORD = """
local taken = #taken_ids
if taken == 0 then return false end
local nows = string.format('%d', now)
local ent = redis.call('XADD', p .. 'w:' .. wid .. ':s', '*', 'm', ARGV[2], 'ids', table.concat(taken_ids, ','))
for j = 1, taken do
  local t = taken_fields[j]
  redis.call('HSET', taken_keys[j], 'state', 'running', 'v', string.format('%d', t[2] + 1),
    'att', string.format('%d', (t[3] or 0) + 1), 'st', nows, 'b', ent)
end
redis.call('HSET', p .. 'b:' .. ent, 'w', wid, 'e', '1', 'st', nows, 'n', taken)
redis.call('ZADD', p .. 'leases', now + 30000, ent)
redis.call('HINCRBY', p .. 'meta', 'queued', -taken)
redis.call('HINCRBY', p .. 'meta', 'run', taken)
if tokens then redis.call('HSET', p .. 'meta', 'tokens', tostring(tokens - taken), 'refill', nows) end
return ent"""

# assign: the worker's classes and a count; the script takes the tasks.
# The highest level with ready tasks among the classes, then its keys in
# weighted fair order: the key of lowest virtual time (skipping keys at
# their limit for the rest of the call; they keep their score), one id,
# and the key's time + 1/weight. A set of one key pops up to the count at
# once (ARGV[5] = '1' allows it). A turn takes up to ARGV[6] ids (the
# quantum; 1 is exact turns) and advances the key by that many steps. When the top level's keys are all at
# their limits the call ends: lower levels wait (a choice, not measured).
# ARGV[1] prefix, ARGV[2] envelope, ARGV[3] worker, ARGV[4] count,
# ARGV[5] one-key shortcut, ARGV[6] quantum, ARGV[7..] classes.
Q_ASSIGN = LIMITS + """
local shortcut, quantum = ARGV[5] == '1', tonumber(ARGV[6])
local conf = {} -- per key met in this call: {conc, run, step, taken}
local function settings(k)
  local c = conf[k]
  if c then return c end
  c = {false, 0, '1', 0}
  if klim then
    local h = redis.call('HMGET', p .. 'keyconf:' .. k, 'conc', 'run', 'weight')
    c = {tonumber(h[1]) or false, tonumber(h[2] or '0'), h[3] and tostring(1 / tonumber(h[3])) or '1', 0}
  end
  conf[k] = c
  return c
end
local stop = false
while #taken_ids < want and not stop do
  local class, level, best
  for ci = 7, #ARGV do
    local top = redis.call('ZREVRANGE', p .. 'levels:' .. ARGV[ci], 0, 0, 'WITHSCORES')
    if top[1] and (not best or tonumber(top[2]) > best) then class, level, best = ARGV[ci], top[1], tonumber(top[2]) end
  end
  if not class then break end
  local ks = p .. 'keys:' .. class .. ':' .. level
  local blocked, nblocked = {}, 0
  while #taken_ids < want do
    local low = redis.call('ZRANGE', ks, 0, nblocked + 1, 'WITHSCORES')
    if not low[1] then
      redis.call('ZREM', p .. 'levels:' .. class, level)
      break
    end
    local k
    for j = 1, #low, 2 do
      if not blocked[low[j]] then k = low[j]; break end
    end
    if not k then stop = true; break end
    local c = settings(k)
    local room = want - #taken_ids
    if c[1] then room = math.min(room, c[1] - c[2] - c[4]) end
    if room <= 0 then
      blocked[k], nblocked = true, nblocked + 1
    else
      local list = p .. 'ready:' .. class .. ':' .. k .. ':' .. level
      -- One id per turn, or up to the quantum, or (one key in the set) up
      -- to the room; popping fewer than asked shows the list is empty.
      local ask = 1
      if shortcut and #low == 2 and nblocked == 0 then ask = room
      elseif quantum > 1 then ask = math.min(room, quantum) end
      local ids
      if ask == 1 then
        local id = redis.call('LPOP', list)
        ids = id and {id} or {}
      else
        ids = redis.call('LPOP', list, ask) or {}
      end
      local got = 0
      for j = 1, #ids do
        if take(ids[j]) then got = got + 1 end
      end
      c[4] = c[4] + got
      if #ids < ask then
        redis.call('ZREM', ks, k)
      else
        redis.call('ZINCRBY', ks, #ids == 1 and c[3] or tostring(#ids * tonumber(c[3])), k)
      end
    end
  end
end
for k, c in pairs(conf) do
  if c[1] and c[4] > 0 then redis.call('HINCRBY', p .. 'keyconf:' .. k, 'run', c[4]) end
end
""" + RECORD

# complete: as layout-floor.py's batch (LEAN_COMPLETE), the counts in meta,
# and, when the queue has key limits, the finished tasks' keys' `run`; with
# ARGV[4] = '1' each finished id also goes into idx:succeeded (one ZADD
# per call). ARGV[1] prefix, ARGV[2] envelope, ARGV[3] batch, ARGV[4] idx,
# ARGV[5..] ids.
Q_COMPLETE = CLOCK + """
local p, token = ARGV[1], ARGV[3]
local klim = redis.call('HGET', p .. 'meta', 'klim') == '1'
local done, nows, idx, per_key = 0, string.format('%d', now), {}, {}
for i = 5, #ARGV do
  local k = p .. 't:' .. ARGV[i]
  local t = klim and redis.call('HMGET', k, 'state', 'v', 'b', 'k') or redis.call('HMGET', k, 'state', 'v', 'b')
  if t[1] == 'running' and t[3] == token then
    redis.call('HSET', k, 'state', 'succeeded', 'v', string.format('%d', t[2] + 1), 'fin', nows, 'res', 'null')
    redis.call('PEXPIRE', k, 60000)
    done = done + 1
    idx[2 * done - 1], idx[2 * done] = nows, ARGV[i]
    if t[4] then per_key[t[4]] = (per_key[t[4]] or 0) + 1 end
  end
end
local batch = p .. 'b:' .. token
if redis.call('HINCRBY', batch, 'n', -done) <= 0 then
  redis.call('DEL', batch)
  redis.call('ZREM', p .. 'leases', token)
end
redis.call('XADD', p .. 'events', 'MAXLEN', '~', 100000, '*', 'm', ARGV[2])
redis.call('HINCRBY', p .. 'meta', 'run', -done)
if ARGV[4] == '1' and done > 0 then redis.call('ZADD', p .. 'idx:succeeded', unpack(idx)) end
for key, n in pairs(per_key) do redis.call('HINCRBY', p .. 'keyconf:' .. key, 'run', -n) end
return done"""

# BullMQ's layout for the same runs: one sorted set per class, scored
# (LEVELS - 1 - level) * 2^32 + seq, so the highest level and then the
# oldest come first. ARGV as Q_SUBMIT (the key is only stored).
Z_SUBMIT = CLOCK + """
local p = ARGV[1]
local ent = redis.call('XADD', p .. 'wake', 'MAXLEN', '~', 1000, '*', 'm', ARGV[2])
local nows = string.format('%d', now)
local i, total = 3, 0
while i <= #ARGV do
  local c, k, l, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  i = i + 4
  local seq = redis.call('INCRBY', p .. 'seq', n) - n
  local base = (""" + str(LEVELS - 1) + """ - l) * 4294967296
  local members = {}
  for j = 1, n do
    local id = ARGV[i + j - 1]
    if k == '' then
      redis.call('HSET', p .. 't:' .. id, 'state', 'queued', 'v', '1', 'h', 'noop', 'in', 'null', 'ct', nows, 'ent', ent)
    else
      redis.call('HSET', p .. 't:' .. id, 'state', 'queued', 'v', '1', 'h', 'noop', 'in', 'null', 'ct', nows, 'ent', ent,
        'k', k)
    end
    members[2 * j - 1], members[2 * j] = string.format('%d', base + (seq + j) % 4294967296), id
  end
  i = i + n
  redis.call('ZADD', p .. 'ready:' .. c, unpack(members))
  total = total + n
end
redis.call('HINCRBY', p .. 'meta', 'queued', total)
return total"""

# assign from one class's sorted set: ZPOPMIN with the count.
Z_ASSIGN = LIMITS + """
assert(#ARGV == 7, 'zset layout: one class')
while #taken_ids < want do
  local room = want - #taken_ids
  local popped = redis.call('ZPOPMIN', p .. 'ready:' .. ARGV[7], room)
  for j = 1, #popped, 2 do take(popped[j]) end
  if #popped < 2 * room then break end
end
""" + RECORD

# Today's task hash for the memory comparison: as submit.lua writes it, with
# the bench's input `null`.
TODAY_SUBMIT = floor.SUBMIT.replace("'in', '{}'", "'in', 'null'")
assert TODAY_SUBMIT != floor.SUBMIT

# layout-floor.py's batch with the lease start `st` in assign's HSET, as
# assign.lua writes it since batch leases were built (5 fields, as the
# queue layouts write): the yardstick without that difference.
BATCH_ST_ASSIGN = floor.BATCH_ASSIGN.replace(
    "for j = 1, #keys do\n  redis.call('HSET', keys[j], 'state', 'running', 'v', versions[j], 'att', attempts[j], 'b', ent)",
    "local nows = string.format('%d', now)\nfor j = 1, #keys do\n"
    "  redis.call('HSET', keys[j], 'state', 'running', 'v', versions[j], 'att', attempts[j], 'st', nows, 'b', ent)")
assert "'st', nows" in BATCH_ST_ASSIGN

# layout-floor.py's batch complete with the same idx:succeeded ZADD.
BATCH_COMPLETE_IDX = floor.LEAN_COMPLETE.replace(
    "local done, nows = 0, string.format('%d', now)",
    "local done, nows, idx = 0, string.format('%d', now), {}").replace(
    "    done = done + 1\n",
    "    done = done + 1\n    idx[2 * done - 1], idx[2 * done] = nows, ARGV[i]\n").replace(
    "redis.call('XADD', KEYS[1], 'MAXLEN'",
    "if done > 0 then redis.call('ZADD', ARGV[1] .. 'idx:succeeded', unpack(idx)) end\n"
    "redis.call('XADD', KEYS[1], 'MAXLEN'")
assert BATCH_COMPLETE_IDX.count("idx:succeeded") == 1 and "idx[2 * done" in BATCH_COMPLETE_IDX

COUNTED = ("cmdstat_evalsha", "cmdstat_hgetall")


def usec(r, names=COUNTED):
    stats = r.info("commandstats")
    return sum(stats.get(n, {}).get("usec", 0) for n in names)


def measure(r, n, step):
    """µs per task inside Redis for one step: script calls and HGETALL."""
    before = usec(r)
    step()
    return (usec(r) - before) / n


# Variants of the queue layouts: queues, keys per queue, tasks per run of
# one submit call, limits, idx, the one-key shortcut, level lists or zset.
VARIANTS = {
    "q1": dict(queues=1, keys=1, run=BATCH, limits=False, idx=False, shortcut=True, zset=False, quantum=1),
    "q1-idx": dict(queues=1, keys=1, run=BATCH, limits=False, idx=True, shortcut=True, zset=False, quantum=1),
    "q1-turns": dict(queues=1, keys=1, run=BATCH, limits=False, idx=False, shortcut=False, zset=False, quantum=1),
    "q1000": dict(queues=1, keys=1000, run=4, limits=False, idx=False, shortcut=True, zset=False, quantum=1),
    "q1000-q4": dict(queues=1, keys=1000, run=4, limits=False, idx=False, shortcut=True, zset=False, quantum=4),
    "q10x1000": dict(queues=10, keys=1000, run=2, limits=True, idx=False, shortcut=True, zset=False, quantum=1),
    "zset": dict(queues=1, keys=1, run=BATCH, limits=False, idx=False, shortcut=True, zset=True, quantum=1),
}


def qprefix(q):
    return "{d:q%d:0}:" % q


def run_queues(r, name, sha):
    """One run of a queue variant through submit, assign, accept, complete."""
    v = VARIANTS[name]
    r.flushall()
    nq, nk = v["queues"], v["keys"]
    for q in range(nq):
        p = qprefix(q)
        if v["limits"]:
            r.hset(p + "meta", mapping={"klim": "1", "conc": "1000000", "rate": "1000000", "burst": "1000000"})
            for k in range(nk):
                r.hset(p + "keyconf:" + f"k{k}", mapping={"conc": "1000", "weight": "1"})
    n = BATCH * BATCHES
    steps = {}
    runs_made = [0] * nq
    calls = []
    for b in range(BATCHES):
        q = b % nq
        ids = [f"q{b:05d}{i:02d}0123456789abcd" for i in range(BATCH)]
        args = []
        for s in range(0, BATCH, v["run"]):
            key = "" if nk == 1 else f"k{runs_made[q] % nk}"
            runs_made[q] += 1
            part = ids[s:s + v["run"]]
            args += ["c1", key, "5", str(len(part)), *part]
        calls.append((qprefix(q), args))
    submit = sha["z_submit" if v["zset"] else "q_submit"]
    steps["submit"] = measure(r, n, lambda: [r.evalsha(submit, 0, p, ENVELOPE, *a) for p, a in calls])
    assign = sha["z_assign" if v["zset"] else "q_assign"]
    entries = []  # (prefix, batch entry)
    left = [BATCHES // nq + (1 if q < BATCHES % nq else 0) for q in range(nq)]

    def assign_all():
        q = 0
        while any(left):
            if left[q]:
                p = qprefix(q)
                ent = r.evalsha(assign, 0, p, ENVELOPE, "w1", str(BATCH), "1" if v["shortcut"] else "0", str(v["quantum"]), "c1")
                assert ent, f"{name}: assign took nothing from {p}"
                entries.append((p, ent.decode()))
                left[q] -= 1
            q = (q + 1) % nq
    steps["assign"] = measure(r, n, assign_all)
    # The ids each batch took, from the worker's stream (not counted: the
    # worker's stream read is not counted for batch either).
    taken = []
    for p, ent in entries:
        (_, fields), = r.xrange(p + "w:w1:s", ent, ent)
        taken.append(fields[b"ids"].decode().split(","))
    assert sum(map(len, taken)) == n, f"{name}: {sum(map(len, taken))} tasks taken of {n}"

    def accept():
        for (p, ent), ids in zip(entries, taken):
            pipe = r.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(p + "t:" + i)
            pipe.hgetall(p + "b:" + ent)
            pipe.execute()
    steps["accept"] = measure(r, n, accept)
    finished = []
    steps["complete"] = measure(r, n, lambda: finished.extend(
        r.evalsha(sha["q_complete"], 0, p, ENVELOPE, ent, "1" if v["idx"] else "0", *ids)
        for (p, ent), ids in zip(entries, taken)))
    assert finished == [len(ids) for ids in taken], f"{name}: tasks finished per batch {finished}"
    for q in range(nq):
        meta = r.hgetall(qprefix(q) + "meta")
        assert int(meta.get(b"run", 0)) == 0 and int(meta.get(b"queued", 0)) == 0, f"{name}: counts {meta}"
        if v["idx"]:
            assert r.zcard(qprefix(q) + "idx:succeeded") > 0
    return steps


def run_batch(r, sha, name):
    """layout-floor.py's batch, or batch-st (the lease start written) or
    batch-idx (complete's idx:succeeded ZADD)."""
    step, script = {"batch": ("batch_assign", "batch_assign"), "batch-st": ("batch_assign", "batch_st_assign"),
                    "batch-idx": ("batch_complete", "batch_complete_idx")}[name]
    saved = sha[step]
    sha[step] = sha[script]
    try:
        steps = floor.run(r, "batch", sha)
    finally:
        sha[step] = saved
    if name == "batch-idx":
        assert r.zcard(floor.PREFIX + "idx:succeeded") == BATCH * BATCHES
    if name == "batch-st":
        assert r.hget(floor.PREFIX + "t:" + f"batch{0:05d}{0:02d}0123456789abc", "st")
    return steps


def check(r, sha):
    """The queue scripts do what QUEUES.md says, on a few tasks."""
    p = qprefix(0)

    def submit(*runs, script="q_submit"):
        args = []
        for c, k, l, ids in runs:
            args += [c, k, str(l), str(len(ids)), *ids]
        r.evalsha(sha[script], 0, p, ENVELOPE, *args)

    def assign(count, shortcut="1", script="q_assign", classes=("c1",), quantum="1"):
        ent = r.evalsha(sha[script], 0, p, ENVELOPE, "w1", str(count), shortcut, quantum, *classes)
        if not ent:
            return []
        (_, fields), = r.xrange(p + "w:w1:s", ent, ent)
        return fields[b"ids"].decode().split(",")

    r.flushall()
    submit(("c1", "A", 5, ["a1", "a2", "a3", "a4"]), ("c1", "B", 5, ["b1", "b2"]), ("c1", "C", 5, ["c1"]))
    assert assign(5) == ["a1", "b1", "c1", "a2", "b2"], "fair turns, oldest first within a key"
    assert assign(5) == ["a3", "a4"], "one key left: the rest at once"
    assert r.zcard(p + "keys:c1:5") == 0 and r.zcard(p + "levels:c1") == 0, "empty keys and levels leave"
    submit(("c1", "A", 5, ["a1", "a2", "a3", "a4"]), ("c1", "B", 5, ["b1", "b2", "b3"]))
    assert assign(6, quantum="2") == ["a1", "a2", "b1", "b2", "a3", "a4"], "a turn of 2"
    assert assign(6, quantum="2") == ["b3"] and r.zcard(p + "keys:c1:5") == 0
    r.flushall()
    r.hset(p + "meta", "klim", "1")
    r.hset(p + "keyconf:A", mapping={"conc": "1"})
    r.hset(p + "keyconf:B", mapping={"weight": "2"})
    submit(("c1", "A", 5, ["a1", "a2"]), ("c1", "B", 5, ["b1", "b2", "b3", "b4"]), ("c1", "C", 5, ["c1", "c2"]))
    assert assign(6) == ["a1", "b1", "c1", "b2", "b3", "c2"], "a key at its limit is skipped; weight 2 takes 2 turns"
    assert r.hget(p + "keyconf:A", "run") == b"1"
    r.hset(p + "t:b4", "state", "cancelled")
    assert assign(6) == [], "A at its limit, B's only task cancelled: nothing"
    assert r.lrange(p + "ready:c1:A:5", 0, -1) == [b"a2"], "a key at its limit keeps its tasks"
    r.flushall()
    submit(("c1", "", 3, ["low"]), ("c2", "", 7, ["high"]))
    assert assign(1, classes=("c1", "c2")) == ["high"], "the highest level among the classes first"
    r.hset(p + "meta", "paused", "1")
    assert assign(1, classes=("c1", "c2")) == [], "paused"
    r.hdel(p + "meta", "paused")
    r.hset(p + "meta", mapping={"rate": "1", "burst": "1", "tokens": "0", "refill": str(int(time.time() * 1000))})
    assert assign(1, classes=("c1", "c2")) == [], "no token yet"
    r.flushall()
    submit(("c1", "", 3, ["l1", "l2"]), ("c1", "", 8, ["h1"]), ("c1", "", 3, ["l3"]), script="z_submit")
    r.hset(p + "t:l2", "state", "cancelled")
    assert assign(4, script="z_assign") == ["h1", "l1", "l3"], "sorted set: level, then age; cancelled dropped"
    r.flushall()


def cpu(r, sha, repeats):
    """Turns of batch, batch-st, then one variant, REPEATS times; medians
    of each step, and of each turn's ratio to its batch and batch-st."""
    seen = {}
    order = [v for v in VARIANTS_RUN if v in ORDER]
    total = lambda steps: sum(steps.values())
    for _ in range(repeats):
        for name in order:
            base, base_st = run_batch(r, sha, "batch"), run_batch(r, sha, "batch-st")
            steps = run_batch(r, sha, name) if name.startswith("batch") else run_queues(r, name, sha)
            for k, v in (("batch", base), ("batch-st", base_st), (name, steps)):
                seen.setdefault(k, []).append(v)
            seen.setdefault("batch-st/batch", []).append(total(base_st) / total(base))
            seen.setdefault(name + "/batch", []).append(total(steps) / total(base))
            seen.setdefault(name + "/batch-st", []).append(total(steps) / total(base_st))
            print(f"  turn: batch {total(base):.2f}, batch-st {total(base_st):.2f}, {name} {total(steps):.2f} us per task",
                  file=sys.stderr, flush=True)
    for name in ["batch", "batch-st"] + order:
        runs = seen[name]
        med = {k: statistics.median(s[k] for s in runs) for k in runs[0]}
        shown = ", ".join(f"{k} {v:.2f}" for k, v in med.items())
        spread = lambda xs: f"{statistics.median(xs):.3f} ({min(xs):.2f}-{max(xs):.2f})"
        ratio = "" if name == "batch" else f"; /batch {spread(seen[name + '/batch'])}"
        if name not in ("batch", "batch-st"):
            ratio += f", /batch-st {spread(seen[name + '/batch-st'])}"
        print(f"{name}: {shown}; all {statistics.median(map(total, runs)):.2f} us per task{ratio} "
              f"(median of {len(runs)})", flush=True)


B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def task_ids(n, seed):
    rnd = random.Random(seed)
    return ["".join(rnd.choice(B62) for _ in range(22)) for _ in range(n)]


def memory(r, sha):
    """Bytes per queued task: used_memory after - before, over n."""
    n = MEMORY_TASKS
    ids = task_ids(n, 7)
    wake = "x" * 100  # the wake entry: class and a signature
    for name, script, keys in (("lists, 1 key", "q_submit", 1), ("lists, 1,000 keys", "q_submit", 1000),
                               ("sorted set per class, 1 key", "z_submit", 1), ("today (intake stream)", None, 1)):
        r.flushall()
        p = "{drover:0}:" if script is None else "{drover:default:0}:"
        before = r.info("memory")["used_memory"]
        for s in range(0, n, 1000):
            part = ids[s:s + 1000]
            if script is None:
                # As submit.lua: the hash, and an intake entry per call whose
                # envelope names the ids (JSON strings, plus a header).
                env = "x" * 100 + ",".join(f'"{i}"' for i in part)
                r.evalsha(sha["today_submit"], 2, p + "intake", p + "counts", p, env, *part)
                continue
            args = []
            step = len(part) if keys == 1 else 1
            for j in range(0, len(part), step):
                key = "" if keys == 1 else f"k{(s + j) % keys}"
                args += ["c1", key, "5", str(len(part[j:j + step])), *part[j:j + step]]
            r.evalsha(sha[script], 0, p, wake, *args)
        after = r.info("memory")["used_memory"]
        print(f"memory {name}: {(after - before) / n:.1f} bytes per queued task ({n} tasks)", flush=True)
    # A finished task's member of idx:<state>, scored by its finish ms.
    r.flushall()
    before = r.info("memory")["used_memory"]
    fin = int(time.time() * 1000)
    for s in range(0, n, 1000):
        r.zadd(p + "idx:succeeded", {i: fin + s for i in ids[s:s + 1000]})
    after = r.info("memory")["used_memory"]
    print(f"memory idx:succeeded: {(after - before) / n:.1f} bytes per finished task ({n} members)", flush=True)
    r.flushall()


# Finished tasks as complete.lua leaves them, 1 in 100 dead, and idx:dead
# with n members (the page's worst case: every finished task in it).
FILL = """
local p, from, to = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local members = {}
for i = from, to - 1 do
  local id = string.format('01HZ%018d', i)
  local fin = string.format('%d', 1765000000000 + i)
  if i % 100 == 0 then
    redis.call('HSET', p .. 't:' .. id, 'state', 'dead', 'v', '7', 'h', 'noop', 'in', 'null', 'ct', fin, 'ent',
      '1765000000000-0', 'att', '3', 'st', fin, 'b', '1765000000000.12345', 'fin', fin, 'err', 'boom')
  else
    redis.call('HSET', p .. 't:' .. id, 'state', 'succeeded', 'v', '3', 'h', 'noop', 'in', 'null', 'ct', fin, 'ent',
      '1765000000000-0', 'att', '1', 'st', fin, 'b', '1765000000000.12345', 'fin', fin, 'res', 'null')
  end
  members[#members + 1] = fin
  members[#members + 1] = id
end
redis.call('ZADD', p .. 'idx:dead', unpack(members))
return 1"""


def index(r):
    """A page of 100 dead tasks: ZRANGE BYSCORE on idx:dead, against the
    SCAN walk of today's list_tasks. Redis µs per page, and wall ms."""
    n, p = INDEX_TASKS, "{drover:0}:"
    r.flushall()
    fill = r.script_load(FILL)
    for s in range(0, n, 2000):  # 4,000 values to unpack: under Lua's stack limit
        r.evalsha(fill, 0, p, s, min(n, s + 2000))
    pages = 50
    before, t0 = usec(r, ("cmdstat_zrange",)), time.perf_counter()
    cursor = "-inf"
    for _ in range(pages):
        page = r.zrange(p + "idx:dead", cursor, "+inf", byscore=True, offset=0, num=100, withscores=True)
        assert len(page) == 100
        cursor = "(%d" % page[-1][1]
    zr = ((usec(r, ("cmdstat_zrange",)) - before) / pages, (time.perf_counter() - t0) * 1000 / pages)
    walks = max(1, min(5, n // 30000))  # each walk reads about 10,000 keys
    names = ("cmdstat_scan", "cmdstat_hgetall")
    before, t0 = usec(r, names), time.perf_counter()
    scan_only = usec(r, ("cmdstat_scan",))
    cursor, looked = 0, 0
    for _ in range(walks):
        dead = 0
        while dead < 100:
            cursor, keys = r.scan(cursor, match=p + "t:*", count=1000)
            pipe = r.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(k)
            dead += sum(1 for h in pipe.execute() if h.get(b"state") == b"dead")
            looked += len(keys)
            assert cursor != 0, "the walk reached the end: fill more tasks"
    scan = ((usec(r, names) - before) / walks, (time.perf_counter() - t0) * 1000 / walks,
            (usec(r, ("cmdstat_scan",)) - scan_only) / walks)
    print(f"index page idx:dead ZRANGE BYSCORE LIMIT 0 100: {zr[0]:.1f} us of Redis per page, "
          f"{zr[1]:.2f} ms wall ({n} members, {pages} pages)", flush=True)
    print(f"index page SCAN walk: {scan[0]:.0f} us of Redis per page of 100 dead (SCAN {scan[2]:.0f}, "
          f"HGETALL the rest), {scan[1]:.1f} ms wall, {looked / walks:.0f} keys read ({n} tasks, {walks} pages)",
          flush=True)
    r.flushall()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    repeats = int(args[0]) if args else 3
    with floor.redis_server("--hash-max-listpack-value", "2048") as r:
        sha = floor.load(r)
        sha.update({"q_submit": r.script_load(Q_SUBMIT), "q_assign": r.script_load(Q_ASSIGN),
                    "q_complete": r.script_load(Q_COMPLETE), "z_submit": r.script_load(Z_SUBMIT),
                    "z_assign": r.script_load(Z_ASSIGN), "batch_complete_idx": r.script_load(BATCH_COMPLETE_IDX),
                    "today_submit": r.script_load(TODAY_SUBMIT),
                    "batch_st_assign": r.script_load(BATCH_ST_ASSIGN)})
        check(r, sha)
        print("checks: queue scripts take in fair turns, by level, within limits; ok", flush=True)
        if "cpu" in PARTS:
            cpu(r, sha, repeats)
        if "memory" in PARTS:
            memory(r, sha)
        if "index" in PARTS:
            index(r)


if __name__ == "__main__":
    main()
