#!/usr/bin/env python3
"""Benchmarks crucible-engine on localproc side by side with ninja.

Generates no-op DAGs, runs both tools on the same DAG with the same
parallelism, and prints a Markdown table of wall time, peak RSS and the
ratio crucible-engine / ninja. Every transition of crucible-engine is
persisted to its SQLite store as in production.

    ./dev bench                      # or:
    python3 tests/bench/bench.py --engine build/bin/crucible-engine [--repeat 3] [-j 2]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def shape_independent(n):
    return [(f"s{i}", []) for i in range(n)]


def shape_chain(n):
    return [(f"s{i}", [f"s{i - 1}"] if i else []) for i in range(n)]


def shape_layers(layers, width):
    steps = []
    for l in range(layers):
        prev = [f"l{l - 1}n{j}" for j in range(width)] if l else []
        steps += [(f"l{l}n{j}", prev) for j in range(width)]
    return steps


def write_toml(path, name, steps, jobs):
    with open(path, "w") as f:
        f.write(f'[workflow]\nname = "{name}"\nmax_parallel = {jobs}\n\n')
        for sid, needs in steps:
            f.write(f'[[steps]]\nid = "{sid}"\nrun = ["true"]\n')
            if needs:
                f.write("needs = [" + ", ".join(f'"{n}"' for n in needs) + "]\n")


def write_ninja(path, steps):
    with open(path, "w") as f:
        f.write("rule noop\n  command = true\n\n")
        for sid, needs in steps:
            f.write(f"build {sid}: noop" + (" | " + " ".join(needs) if needs else "") + "\n")


def measure(argv, cwd):
    """Runs argv; returns (wall seconds, peak RSS MiB, exit code).

    Peak RSS comes from GNU time, which forks from a small process: Linux
    carries a forking parent's peak RSS across exec, so measuring a child of
    this Python process directly would report Python's size.
    """
    fd, report = tempfile.mkstemp(prefix="crucible-bench-rss-")
    os.close(fd)
    try:
        start = time.perf_counter()
        rc = subprocess.call(["/usr/bin/time", "-q", "-f", "%M", "-o", report] + argv, cwd=cwd,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        with open(report) as f:
            rss_kb = int(f.read().strip().splitlines()[-1])
    finally:
        os.remove(report)
    return wall, rss_kb / 1024.0, rc


def run_shape(engine, ninja, name, steps, jobs, repeat, work):
    d = os.path.join(work, name)
    os.makedirs(d)
    toml = os.path.join(d, "workflow.toml")
    write_toml(toml, name, steps, jobs)
    write_ninja(os.path.join(d, "build.ninja"), steps)
    rows = {"crucible-engine": [], "ninja": []}
    for _ in range(repeat):
        state = os.path.join(d, "state")
        shutil.rmtree(state, ignore_errors=True)
        w, rss, rc = measure([engine, "run", toml, "--state-dir", state, "--max-parallel", str(jobs)], d)
        if rc != 0:
            sys.exit(f"crucible-engine failed on {name} (exit {rc})")
        rows["crucible-engine"].append((w, rss))
        for f in (".ninja_log", ".ninja_deps"):
            try:
                os.remove(os.path.join(d, f))
            except FileNotFoundError:
                pass
        w, rss, rc = measure([ninja, "-j", str(jobs)], d)
        if rc != 0:
            sys.exit(f"ninja failed on {name} (exit {rc})")
        rows["ninja"].append((w, rss))
    out = {}
    for tool, runs in rows.items():
        out[tool] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
    return out, os.path.getsize(toml)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--ninja", default=shutil.which("ninja") or "ninja")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", help="run one shape: independent, chain, layers, validate")
    args = ap.parse_args()
    engine = os.path.abspath(args.engine)
    shapes = [
        ("independent", "10,000 independent", shape_independent(10000)),
        ("chain", "chain of 1,000", shape_chain(1000)),
        ("layers", "100 layers x 100, full deps", shape_layers(100, 100)),
    ]
    print(f"machine: {os.cpu_count()} CPUs; -j{args.jobs}; median of {args.repeat} runs; peak RSS is the max\n")
    print("| shape | crucible-engine | ninja | ratio (wall) | crucible peak RSS | ninja peak RSS | workflow file |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="crucible-bench-") as work:
        for key, label, steps in shapes:
            if args.only and args.only != key:
                continue
            r, size = run_shape(engine, args.ninja, key, steps, args.jobs, args.repeat, work)
            ce, nj = r["crucible-engine"], r["ninja"]
            print(f"| {label} | {ce[0]:.2f} s | {nj[0]:.2f} s | {ce[0] / nj[0]:.2f} x | {ce[1]:.1f} MiB "
                  f"| {nj[1]:.1f} MiB | {size / 1e6:.1f} MB |", flush=True)
        if not args.only or args.only == "validate":
            d = os.path.join(work, "validate")
            os.makedirs(d)
            toml = os.path.join(d, "workflow.toml")
            write_toml(toml, "validate-100k", shape_chain(100000), args.jobs)
            times = []
            for _ in range(args.repeat):
                w, rss, rc = measure([engine, "validate", toml], d)
                if rc != 0:
                    sys.exit(f"validate failed (exit {rc})")
                times.append((w, rss))
            print(f"\nvalidate of a 100,000-step chain ({os.path.getsize(toml) / 1e6:.1f} MB): "
                  f"{statistics.median(t[0] for t in times):.2f} s, peak RSS {max(t[1] for t in times):.1f} MiB")


if __name__ == "__main__":
    main()
