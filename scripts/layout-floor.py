#!/usr/bin/env python3
"""How cheap could a task's life be in Redis? Three layouts that drover
does not use, measured the way `drover bench --scenario scripts` measures
drover's own scripts, so the four can be compared on one host:

- plain: drover's own commands and fields, in Lua as plain as lean's:
  fixed settings, one or two arguments per task in, one value out per
  call. What drover's scripts cost beyond it is their plumbing: arguments,
  replies and bookkeeping (BENCHMARKS.md, night page of 2026-11-23).

- lean: the "batch record" layout of BENCHMARKS.md's next steps. Each task
  keeps its hash, written at submit, but assignment only checks the state
  and version and writes 3 fields (state, version, batch); the lease
  (worker, epoch, start, deadline) is one record per assign batch, with one
  deadline per batch. Completion checks state and batch, writes the result
  and sets the TTL, and retires the batch record when its last task ends.
- batch: lean with the attempt count still charged at assignment (`att`
  read and written per task), as docs/BATCH-LEASES.md proposes to build
  it: the yardstick for that layout.
- floor: no checks and no lease at all: write the task at submit, read it
  once to run it, write its result with a TTL. A task system that keeps a
  durable record per task cannot do less.

All four run 500 batches of 64 tasks (the distributor's chunk) through each
step in turn, with `INFO commandstats` read around every step, and print
µs per task inside Redis (script calls plus the accept step's `HGETALL`
pipeline): the same quantity as the scripts scenario's `us_per_task`. The
envelopes are 200 bytes of filler, not signed. Network, stream reads and
acknowledgements are not counted, as in the scripts scenario.

Usage: scripts/layout-floor.py [REPEATS]   (default 3; needs redis-server,
and installs the `redis` package from PyPI if it is missing)
"""
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time

try:
    import redis
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "redis"])
    import redis

BATCH = 64
BATCHES = int(os.environ.get("BATCHES", "500"))
PREFIX = "{d}:"
ENVELOPE = "x" * 200
CLOCK = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# As submit.lua at its defaults: one stream entry per batch, a hash per task.
SUBMIT = CLOCK + """
local ent = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
local nows = string.format('%d', now)
for i = 3, #ARGV do
  redis.call('HSET', ARGV[1] .. 't:' .. ARGV[i], 'state', 'queued', 'v', '1', 'h', 'noop', 'in', '{}',
    'ct', nows, 'ent', ent)
end
redis.call('HINCRBY', KEYS[2], 'queued', #ARGV - 2)
return 1"""

# The end of lean's and batch's assign: one record and one deadline for the
# whole batch, and the counts.
RECORD_BATCH = """
redis.call('HSET', ARGV[1] .. 'b:' .. ent, 'w', ARGV[3], 'e', '1', 'st', string.format('%d', now), 'n', #keys)
redis.call('ZADD', KEYS[2], now + 30000, ent)
redis.call('HINCRBY', KEYS[3], 'queued', -#keys)
redis.call('HINCRBY', KEYS[3], 'running', #keys)
return ent"""

LEAN_ASSIGN = CLOCK + """
local keys, versions = {}, {}
for i = 4, #ARGV, 2 do
  local k = ARGV[1] .. 't:' .. ARGV[i]
  local t = redis.call('HMGET', k, 'state', 'v')
  if t[1] == 'queued' and t[2] == ARGV[i + 1] then
    keys[#keys + 1], versions[#versions + 1] = k, string.format('%d', ARGV[i + 1] + 1)
  end
end
local ent = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
for j = 1, #keys do
  redis.call('HSET', keys[j], 'state', 'running', 'v', versions[j], 'b', ent)
end
""" + RECORD_BATCH

# As lean, and the attempt count charged at assignment, as today.
BATCH_ASSIGN = CLOCK + """
local keys, versions, attempts = {}, {}, {}
for i = 4, #ARGV, 2 do
  local k = ARGV[1] .. 't:' .. ARGV[i]
  local t = redis.call('HMGET', k, 'state', 'v', 'att')
  if t[1] == 'queued' and t[2] == ARGV[i + 1] then
    keys[#keys + 1], versions[#versions + 1] = k, string.format('%d', ARGV[i + 1] + 1)
    attempts[#keys] = string.format('%d', (t[3] or 0) + 1)
  end
end
local ent = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
for j = 1, #keys do
  redis.call('HSET', keys[j], 'state', 'running', 'v', versions[j], 'att', attempts[j], 'b', ent)
end
""" + RECORD_BATCH

LEAN_COMPLETE = CLOCK + """
local done, nows = 0, string.format('%d', now)
for i = 4, #ARGV do
  local k = ARGV[1] .. 't:' .. ARGV[i]
  local t = redis.call('HMGET', k, 'state', 'v', 'b')
  if t[1] == 'running' and t[3] == ARGV[3] then
    redis.call('HSET', k, 'state', 'succeeded', 'v', string.format('%d', t[2] + 1), 'fin', nows, 'res', 'null')
    redis.call('PEXPIRE', k, 60000)
    done = done + 1
  end
end
local batch = ARGV[1] .. 'b:' .. ARGV[3]
if redis.call('HINCRBY', batch, 'n', -done) <= 0 then
  redis.call('DEL', batch)
  redis.call('ZREM', KEYS[2], ARGV[3])
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100000, '*', 'm', ARGV[2])
redis.call('HINCRBY', KEYS[3], 'running', -done)
return done"""

# As assign.lua: check state and version, then the lease fields on every
# task and a deadline per task.
PLAIN_ASSIGN = CLOCK + """
local ids, keys, fields = {}, {}, {}
for i = 4, #ARGV, 2 do
  local k = ARGV[1] .. 't:' .. ARGV[i]
  local t = redis.call('HMGET', k, 'state', 'v', 'f', 'att')
  if t[1] == 'queued' and t[2] == ARGV[i + 1] then
    ids[#ids + 1], keys[#keys + 1], fields[#fields + 1] = ARGV[i], k, t
  end
end
local ent = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
local nows, deadline = string.format('%d', now), string.format('%d', now + 30000)
local deadlines = {}
for j = 1, #keys do
  local t = fields[j]
  redis.call('HSET', keys[j], 'state', 'running', 'v', string.format('%d', t[2] + 1), 'w', ARGV[3],
    'f', string.format('%d', (t[3] or 0) + 1), 'e', '1763855000000', 'att', string.format('%d', (t[4] or 0) + 1),
    'st', nows, 'ent', ent)
  deadlines[2 * j - 1], deadlines[2 * j] = deadline, ids[j]
end
redis.call('ZADD', KEYS[2], unpack(deadlines))
redis.call('HINCRBY', KEYS[3], 'queued', -#keys)
redis.call('HINCRBY', KEYS[3], 'running', #keys)
return ent"""

# As complete.lua for successes: check state, worker, epoch and fence.
PLAIN_COMPLETE = CLOCK + """
local done, nows = {}, string.format('%d', now)
for i = 3, #ARGV do
  local k = ARGV[1] .. 't:' .. ARGV[i]
  local t = redis.call('HMGET', k, 'state', 'w', 'e', 'f', 'v')
  if t[1] == 'running' and t[2] == 'w1' and t[3] == '1763855000000' and t[4] == '1' then
    redis.call('HSET', k, 'state', 'succeeded', 'v', string.format('%d', t[5] + 1), 'fin', nows, 'res', 'null')
    redis.call('PEXPIRE', k, 60000)
    done[#done + 1] = ARGV[i]
  end
end
redis.call('ZREM', KEYS[2], unpack(done))
redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100000, '*', 'm', ARGV[2])
redis.call('HINCRBY', KEYS[3], 'running', -#done)
return #done"""

FLOOR_COMPLETE = CLOCK + """
local nows = string.format('%d', now)
for i = 3, #ARGV do
  local k = ARGV[1] .. 't:' .. ARGV[i]
  redis.call('HSET', k, 'state', 'succeeded', 'v', '3', 'fin', nows, 'res', 'null')
  redis.call('PEXPIRE', k, 60000)
end
return 1"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def usec(r):
    return {k: v["usec"] for k, v in r.info("commandstats").items()}


def measure(r, step):
    """µs per task inside Redis for one step: script calls and HGETALL."""
    before = usec(r)
    step()
    after = usec(r)
    spent = sum(after.get(k, 0) - before.get(k, 0) for k in ("cmdstat_evalsha", "cmdstat_hgetall"))
    return spent / (BATCH * BATCHES)


def run(r, layout, sha):
    r.flushall()
    batches = [[f"{layout}{b:05d}{i:02d}0123456789abc" for i in range(BATCH)] for b in range(BATCHES)]
    steps = {}
    steps["submit"] = measure(r, lambda: [
        r.evalsha(sha["submit"], 2, PREFIX + "intake", PREFIX + "counts", PREFIX, ENVELOPE, *ids) for ids in batches])
    entries = []
    if layout != "floor":
        def assign():
            for ids in batches:
                pairs = [a for i in ids for a in (i, "1")]
                entries.append(r.evalsha(sha[layout + "_assign"], 3, PREFIX + "w:w1:s", PREFIX + "deadlines",
                                         PREFIX + "counts", PREFIX, ENVELOPE, "w1", *pairs).decode())
        steps["assign"] = measure(r, assign)

    def accept():
        for n, ids in enumerate(batches):
            p = r.pipeline(transaction=False)
            for i in ids:
                p.hgetall(PREFIX + "t:" + i)
            if layout in ("lean", "batch"):
                p.hgetall(PREFIX + "b:" + entries[n])
            p.execute()
    steps["accept"] = measure(r, accept)
    if layout != "floor":
        finished = []
        # plain's complete names the tasks only; lean's and batch's also the batch.
        batch_args = (lambda e: []) if layout == "plain" else (lambda e: [e])
        steps["complete"] = measure(r, lambda: finished.extend(
            r.evalsha(sha[layout + "_complete"], 3, PREFIX + "events", PREFIX + "deadlines", PREFIX + "counts",
                      PREFIX, ENVELOPE, *batch_args(e), *ids) for ids, e in zip(batches, entries)))
        # A check that failed would make the layout look cheaper than it is.
        assert finished == [BATCH] * BATCHES, f"{layout}: tasks finished per batch {finished}"
    else:
        steps["complete"] = measure(r, lambda: [
            r.evalsha(sha["floor_complete"], 0, PREFIX, ENVELOPE, *ids) for ids in batches])
    return steps


@contextlib.contextmanager
def redis_server(*args):
    """A redis-server of its own on a free port, without persistence, and a
    client for it; stopped on the way out. scripts/queue-layouts.py uses it too."""
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                   "--dir", d, *args], stdout=subprocess.DEVNULL)
        try:
            r = redis.Redis(port=port)
            for _ in range(100):
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield r
        finally:
            server.terminate()
            server.wait()


def load(r):
    """The scripts of every layout here, loaded: name → SHA."""
    return {"submit": r.script_load(SUBMIT),
            "lean_assign": r.script_load(LEAN_ASSIGN), "lean_complete": r.script_load(LEAN_COMPLETE),
            "batch_assign": r.script_load(BATCH_ASSIGN), "batch_complete": r.script_load(LEAN_COMPLETE),
            "plain_assign": r.script_load(PLAIN_ASSIGN), "plain_complete": r.script_load(PLAIN_COMPLETE),
            "floor_complete": r.script_load(FLOOR_COMPLETE)}


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with redis_server() as r:
        sha = load(r)
        for _ in range(repeats):
            for layout in ("plain", "lean", "batch", "floor"):
                steps = run(r, layout, sha)
                shown = ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
                print(f"{layout}: {shown}; all {sum(steps.values()):.2f} us per task", flush=True)


if __name__ == "__main__":
    main()
