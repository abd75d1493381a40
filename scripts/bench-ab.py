#!/usr/bin/env python3
"""Compare two builds of drover with `drover bench`, in interleaved runs.

These machines are shared and noisy: the same binary can differ by 30%
from one run to the next. A change is only judged against the build before
it, with their runs interleaved (A B, B A, A B, ...), so that both see the
same stretches of the host's noise; what counts is the median, the min-max,
and the median of B/A over the pairs (BENCHMARKS.md reports all three).

Usage:
  scripts/bench-ab.py A_BINARY B_BINARY [--runs N] [--metric SUFFIX ...] -- BENCH_ARGS...

For example, the build before a commit against the one after it:
  scripts/bench-ab.py /tmp/drover-before target/release/drover --runs 4 -- --scenario throughput

Each run's JSON line is flattened to dotted paths (`throughput.end_to_end_per_s`,
`scripts.steps.assign.us_per_task`, ...). A path is shown if it ends with
one of the --metric suffixes (by default the headline numbers of each
scenario). A run that fails or prints no JSON stops the comparison.
"""
import argparse
import json
import statistics
import subprocess
import sys

DEFAULT_METRICS = [
    "end_to_end_per_s",
    "redis_cpu_us_per_task",
    "process_cpu_us_per_task.bench_and_roles",
    "process_cpu_us_per_task.worker",
    "process_cpu_us_per_task.distributor",
    "process_cpu_us_per_task.coordinator",
    "process_cpu_us_per_task.bench",
    "submit_to_start.p50_ms",
    "submit_to_start.p99_ms",
    "slot_held.p50_ms",
    "us_per_task",
    "bytes_per_queued_task",
    "growth_across_rounds_bytes",
]


def flatten(value, path=""):
    """Yields (dotted path, number) for every numeric leaf."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from flatten(inner, f"{path}.{key}" if path else key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def run_once(binary, bench_args):
    done = subprocess.run([binary, "bench", *bench_args], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        sys.exit(f"{binary} bench {' '.join(bench_args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return dict(flatten(json.loads(lines[-1])))


def summary(values):
    return f"{statistics.median(values):12.2f} ({min(values):.2f}-{max(values):.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="the build to compare against (A)")
    parser.add_argument("b", help="the build under test (B)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each build (default 3)")
    parser.add_argument("--metric", action="append", help="show paths ending with this (repeatable)")
    # Everything after `--` goes to `drover bench` untouched.
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    bench_args = argv[split + 1:]
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    metrics = args.metric or DEFAULT_METRICS

    results = {"A": [], "B": []}
    binaries = {"A": args.a, "B": args.b}
    for i in range(args.runs):
        # A B, then B A: neither build always runs first.
        for side in ("A", "B") if i % 2 == 0 else ("B", "A"):
            results[side].append(run_once(binaries[side], bench_args))
            print(f"run {i + 1}/{args.runs} {side} done", file=sys.stderr, flush=True)

    paths = [p for p in results["A"][0] if any(p.endswith(m) for m in metrics)]
    print(f"A = {args.a}\nB = {args.b}\n{args.runs} runs each, interleaved; drover bench {' '.join(bench_args)}")
    print(f"{'metric':60s} {'A median (min-max)':>30s} {'B median (min-max)':>30s} {'B/A':>6s}")
    for path in paths:
        a = [r[path] for r in results["A"] if path in r]
        b = [r[path] for r in results["B"] if path in r]
        if len(a) != args.runs or len(b) != args.runs:
            continue
        ratios = [y / x for x, y in zip(a, b) if x != 0]
        ratio = f"{statistics.median(ratios):6.3f}" if ratios else "     -"
        print(f"{path:60s} {summary(a):>30s} {summary(b):>30s} {ratio}")


if __name__ == "__main__":
    main()
