#!/usr/bin/env python3
"""A page of 100 dead tasks among a million finished ones, as a user asks
for it: `GET /v1/tasks?queue=default&state=dead&limit=100` on a real
`drover coordinator`, following `next_cursor`, timed from the client
(issue "Queues": under 10 ms a page).

One redis-server of its own (layout-floor.py's) holds N finished task
hashes as complete.lua leaves them, 1 in 100 dead and filed in the
queue's index of dead tasks (`P q:default:idx:dead`), the rest succeeded;
then the coordinator is started on it and PAGES pages are read over one
kept-alive HTTP connection. Prints the median, p90 and max ms per page.

Usage: scripts/dead-page.py BINARY   (env N, default 1000000; PAGES, default 50)
"""
import http.client
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

_spec = importlib.util.spec_from_file_location(
    "layout_floor", os.path.join(os.path.dirname(os.path.abspath(__file__)), "layout-floor.py"))
floor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(floor)

N = int(os.environ.get("N", 1_000_000))
PAGES = int(os.environ.get("PAGES", 50))
TOKEN = "dead-page-admin-token-0123456789"
KEYS = "k1:" + "1" * 64
P = "{drover:0}:"

# 1 in 100 dead, filed in the queue's index of dead tasks by finish time;
# finished in the last N ms, so none is past the result TTL (the leader
# deletes those).
FILL = """
local p, from, to, base = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local members = {}
for i = from, to - 1 do
  local id = string.format('0dead%017d', i)
  local fin = string.format('%d', base + i)
  if i % 100 == 0 then
    redis.call('HSET', p .. 't:' .. id, 'state', 'dead', 'v', '7', 'h', 'noop', 'in', 'null', 'ct', fin,
      'att', '3', 'st', fin, 'b', '1765000000000.12345', 'fin', fin, 'err', 'boom')
    members[#members + 1] = fin
    members[#members + 1] = id
  else
    redis.call('HSET', p .. 't:' .. id, 'state', 'succeeded', 'v', '3', 'h', 'noop', 'in', 'null', 'ct', fin,
      'att', '1', 'st', fin, 'b', '1765000000000.12345', 'fin', fin, 'res', 'null')
  end
end
if #members > 0 then redis.call('ZADD', p .. 'q:default:idx:dead', unpack(members)) end
redis.call('SADD', p .. 'queues', 'default')
return 1"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(con, path):
    con.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    resp = con.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise SystemExit(f"{path}: {resp.status} {body[:200]!r}")
    return json.loads(body)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/drover"
    with floor.redis_server() as r:
        fill = r.script_load(FILL)
        base = int(time.time() * 1000) - N
        for start in range(0, N, 10_000):
            r.evalsha(fill, 0, P, start, min(start + 10_000, N), base)
        port = r.connection_pool.connection_kwargs["port"]
        http_port = free_port()
        env = dict(os.environ, DROVER_REDIS_URL=f"redis://127.0.0.1:{port}", DROVER_API_TOKENS=f"{TOKEN}:admin",
                   DROVER_SIGNING_KEYS=KEYS, DROVER_HTTP_ADDR=f"127.0.0.1:{http_port}",
                   DROVER_ADMIN_ADDR=f"127.0.0.1:{free_port()}", RUST_LOG="warn")
        with tempfile.TemporaryFile() as log:
            coord = subprocess.Popen([binary, "coordinator", "--id", "c1"], env=env, stdout=log, stderr=log)
            try:
                con = None
                for _ in range(200):
                    try:
                        con = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
                        get(con, "/v1/queues/default")
                        break
                    except (ConnectionError, OSError):
                        con = None
                        time.sleep(0.05)
                if con is None:
                    log.seek(0)
                    raise SystemExit(f"the coordinator did not start:\n{log.read().decode()}")
                ms, cursor, tasks = [], None, 0
                for _ in range(PAGES):
                    path = "/v1/tasks?queue=default&state=dead&limit=100"
                    if cursor:
                        path += f"&cursor={cursor}"
                    t0 = time.perf_counter()
                    page = get(con, path)
                    ms.append((time.perf_counter() - t0) * 1000)
                    tasks += len(page["tasks"])
                    assert all(t["state"] == "dead" for t in page["tasks"]), page["tasks"][:1]
                    cursor = page.get("next_cursor")
                    if not cursor:
                        break
            finally:
                coord.terminate()
                coord.wait()
    ms.sort()
    print(f"dead page of 100 among {N} finished ({N // 100} dead), {len(ms)} pages, {tasks} tasks: "
          f"median {statistics.median(ms):.2f} ms, p90 {ms[int(len(ms) * 0.9) - 1]:.2f} ms, max {ms[-1]:.2f} ms")


if __name__ == "__main__":
    main()
