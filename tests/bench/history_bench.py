#!/usr/bin/env python3
"""Benchmarks the history queries of crucible-engine on a large state database.

Makes a state directory of 1,000 finished runs x 100 steps (one attempt and
one output per step): the real binary runs a one-step workflow once to create
the database with its own schema, then Python's sqlite3 bulk-inserts the rest
following that schema (engine/src/store/store.cc), with small log files for
the run that is queried. Then times `runs`, `status RUN`, `logs RUN STEP` and
`results RUN` end to end (process start to exit; median of --repeat runs) and
prints a Markdown table with PASS/FAIL against the budget.

    ./dev bench-history              # or:
    python3 tests/bench/history_bench.py --engine build/bin/crucible-engine [--repeat 5]
"""
import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

BUDGET_MS = 100.0


def make_state(engine, state, runs, steps):
    """Returns the id of the run to query (in the middle of the history)."""
    wf = os.path.join(os.path.dirname(state), "one.toml")
    with open(wf, "w") as f:
        f.write('[workflow]\nname = "one"\n\n[[steps]]\nid = "a"\nrun = ["true"]\n')
    r = subprocess.run([engine, "run", wf, "--state-dir", state], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"crucible-engine run failed (exit {r.returncode}): {r.stderr}")

    db = sqlite3.connect(os.path.join(state, "crucible.db"))
    version = db.execute("PRAGMA user_version").fetchone()[0]
    source = "[workflow]\nname = \"history\"\n\n" + "".join(
        f'[[steps]]\nid = "step{i:03d}"\nrun = ["echo", "{i}"]\n' for i in range(steps))
    base = int(time.time() * 1000) - runs * 60_000
    ids = [time.strftime("%Y%m%d-%H%M%S", time.gmtime((base + i * 60_000) / 1000)) + f"-{i:04x}"
           for i in range(runs)]
    with db:
        db.executemany(
            "INSERT INTO runs (id, workflow, file, source_text, source_sha256, params_json, state, created_at, "
            "ended_at, exit_code, step_count) VALUES (?, 'history', 'history.toml', ?, 'sha', '{}', ?, ?, ?, ?, ?)",
            ((rid, source, "succeeded" if i % 10 else "failed", base + i * 60_000, base + i * 60_000 + 30_000,
              0 if i % 10 else 1, steps) for i, rid in enumerate(ids)))
        db.executemany(
            "INSERT INTO steps (run_id, idx, step_id, backend, state, reason, attempts, exit_code) "
            "VALUES (?, ?, ?, 'localproc', 'succeeded', '', 1, 0)",
            ((rid, j, f"step{j:03d}") for rid in ids for j in range(steps)))
        db.executemany(
            "INSERT INTO attempts (run_id, step_idx, number, state, reason, exit_code, started_at, ended_at, "
            "log_path, log_bytes, handle) VALUES (?, ?, 1, 'succeeded', 'exited', 0, ?, ?, ?, 64, ?)",
            ((rid, j, base + i * 60_000, base + i * 60_000 + 300,
              os.path.join(state, "logs", rid, f"step{j:03d}.attempt-1.log"), f"pid:{1000 + j}")
             for i, rid in enumerate(ids) for j in range(steps)))
        db.executemany(
            "INSERT INTO outputs (run_id, step_idx, key, value) VALUES (?, ?, 'result', ?)",
            ((rid, j, str(i * steps + j)) for i, rid in enumerate(ids) for j in range(steps)))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()

    queried = ids[runs // 2]
    logs = os.path.join(state, "logs", queried)
    os.makedirs(logs, exist_ok=True)
    for j in range(steps):
        with open(os.path.join(logs, f"step{j:03d}.attempt-1.log"), "w") as f:
            f.write(f"step{j:03d} says hello\n" * 3)
    return queried, version


def time_command(argv, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append((time.perf_counter() - start) * 1000.0)
        if r.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed (exit {r.returncode}): {r.stderr.decode(errors='replace')}")
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    engine = os.path.abspath(args.engine)

    with tempfile.TemporaryDirectory(prefix="crucible-history-") as work:
        state = os.path.join(work, "state")
        start = time.perf_counter()
        run_id, version = make_state(engine, state, args.runs, args.steps)
        made = time.perf_counter() - start
        db_bytes = os.path.getsize(os.path.join(state, "crucible.db"))
        rows = args.runs * args.steps
        print(f"machine: {os.cpu_count()} CPUs; state: {args.runs + 1} runs, {rows:,} steps, {rows:,} attempts, "
              f"{rows:,} outputs (schema {version}); database {db_bytes / 2**20:.1f} MiB, made in {made:.1f} s; "
              f"median of {args.repeat} runs, process start to exit\n")
        base = [engine, "--state-dir", state]
        commands = [
            ("runs", base + ["runs"]),
            ("runs --json", base + ["runs", "--json"]),
            ("runs --all", base + ["runs", "--all"]),
            ("status RUN", base + ["status", run_id]),
            ("status RUN --json", base + ["status", run_id, "--json"]),
            ("status PREFIX", base + ["status", run_id[:-2]]),
            ("logs RUN STEP", base + ["logs", run_id, "step050"]),
            ("logs RUN", base + ["logs", run_id]),
            ("results RUN", base + ["results", run_id]),
            ("--version (process floor)", [engine, "--version"]),
        ]
        print(f"| command | median | budget {BUDGET_MS:.0f} ms |")
        print("|---|---|---|")
        failed = 0
        for label, argv in commands:
            ms = time_command(argv, args.repeat)
            budgeted = not label.startswith("runs --all") and not label.startswith("--version")
            verdict = ("PASS" if ms < BUDGET_MS else "FAIL") if budgeted else "(not budgeted)"
            failed += verdict == "FAIL"
            print(f"| `{label}` | {ms:.1f} ms | {verdict} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
