#!/usr/bin/env python3
"""Benchmarks the compose backend side by side with plain Docker.

On one warm pool of executors (the backend's own compose file), measures in
one run:

  - crucible-engine: no-op steps on the compose backend (per-step latency from
    a sequential run, throughput from N steps at the pool's concurrency);
  - the raw Engine API exec (create + start + inspect over the socket), the
    floor of any per-step exec: what dockerd sustains;
  - a `docker exec` CLI loop into the same executors;
  - a `docker run --rm` loop (a container per step);

each at the same concurrency, and prints a Markdown table with the ratios.
Run it on an otherwise idle machine:

    python3 tests/bench/compose_bench.py --engine build/bin/crucible-engine \\
        [--steps 200] [--pool 8] [--repeat 5]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SOCK = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").replace("unix://", "")
IMAGE = "crucible/busybox:latest"


def http(method, path, body=None, hijack=False):
    """One Engine API call on its own connection; returns (status line, body bytes)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(SOCK)
    data = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} /v1.41{path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n")
    head += "Connection: Upgrade\r\nUpgrade: tcp\r\n" if hijack else "Connection: close\r\n"
    s.sendall(head.encode() + b"\r\n" + data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    status, _, rest = out.partition(b"\r\n\r\n")
    return status.split(b"\r\n", 1)[0], rest


def raw_exec(container):
    """A no-op through the Engine API: create, start (attached), inspect."""
    _, body = http("POST", f"/containers/{container}/exec",
                   {"AttachStdout": True, "AttachStderr": True, "Cmd": ["true"]})
    exec_id = json.loads(body)["Id"]
    http("POST", f"/exec/{exec_id}/start", {"Detach": False, "Tty": False}, hijack=True)
    _, body = http("GET", f"/exec/{exec_id}/json")
    if json.loads(body)["ExitCode"] != 0:
        raise RuntimeError("raw exec failed")


def run_concurrently(n, workers, job):
    """Runs job(worker_index) n times over `workers` threads; returns the wall time."""
    lock = threading.Lock()
    left = [n]

    def loop(w):
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            job(w)

    start = time.monotonic()
    threads = [threading.Thread(target=loop, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start


def sequential(n, job):
    start = time.monotonic()
    for _ in range(n):
        job(0)
    return (time.monotonic() - start) / n


def write_workflow(path, project, pool, steps, parallel):
    items = ", ".join(f'"{i}"' for i in range(steps))
    with open(path, "w") as f:
        f.write(f'[workflow]\nname = "compose-bench"\nbackend = "compose"\nmax_parallel = {parallel}\n\n'
                f'[backends.compose]\nproject = "{project}"\nreplicas = {pool}\nkeep_warm = true\n\n'
                f'[[steps]]\nid = "noop"\nfor_each = [{items}]\nrun = ["true"]\n')


def engine_run(engine, state, wf, extra=()):
    start = time.monotonic()
    r = subprocess.run([engine, "run", wf, "--state-dir", state, *extra], capture_output=True, text=True)
    wall = time.monotonic() - start
    if r.returncode != 0:
        sys.exit(f"compose_bench: crucible-engine failed:\n{r.stderr[-2000:]}")
    return wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--latency-steps", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=5, help="rounds; each runner reports its median round")
    args = ap.parse_args()
    engine = os.path.abspath(args.engine)
    project = f"crucible-bench-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="crucible-compose-bench-")
    state = os.path.join(tmp, "state")
    try:
        # Warm the pool (compose up) outside the measurements.
        wf_one = os.path.join(tmp, "one.toml")
        write_workflow(wf_one, project, args.pool, 1, args.pool)
        engine_run(engine, state, wf_one)
        containers = subprocess.run(
            ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True, text=True, check=True).stdout.split()
        assert len(containers) == args.pool, containers

        def api_job(w):
            raw_exec(containers[w % len(containers)])

        def cli_exec_job(w):
            subprocess.run(["docker", "exec", containers[w % len(containers)], "true"], check=True)

        def docker_run_job(_w):
            subprocess.run(["docker", "run", "--rm", "--network", "none", IMAGE, "true"], check=True,
                           stdout=subprocess.DEVNULL)

        # The runners take turns, --repeat rounds of each; each reports its median round.
        samples = {}

        def keep(key, value):
            samples.setdefault(key, []).append(value)

        n = args.steps
        wf_seq = os.path.join(tmp, "seq.toml")
        write_workflow(wf_seq, project, args.pool, args.latency_steps + 1, 1)
        wf_n = os.path.join(tmp, "many.toml")
        write_workflow(wf_n, project, args.pool, n, args.pool)
        for _ in range(args.repeat):
            # Sequential latency per step.
            keep("api_lat", sequential(args.latency_steps, api_job))
            keep("cli_lat", sequential(args.latency_steps // 2, cli_exec_job))
            t_seq = engine_run(engine, state, wf_seq)
            t_one = engine_run(engine, state, wf_one)
            keep("eng_lat", (t_seq - t_one) / args.latency_steps)
            # Throughput at the pool's concurrency.
            keep("api_wall", run_concurrently(n, args.pool, api_job))
            keep("cli_wall", run_concurrently(n, args.pool, cli_exec_job))
            keep("eng_wall", engine_run(engine, state, wf_n))
            keep("run_lat", sequential(max(5, args.latency_steps // 4), docker_run_job))
            keep("run_wall", run_concurrently(n, args.pool, docker_run_job))
        med = {key: statistics.median(v) for key, v in samples.items()}
        run_lat, run_wall = med["run_lat"], med["run_wall"]
        api_lat, cli_lat, eng_lat = med["api_lat"], med["cli_lat"], med["eng_lat"]
        api_wall, cli_wall, eng_wall = med["api_wall"], med["cli_wall"], med["eng_wall"]

        rows = [
            ("crucible-engine, compose backend", eng_lat, eng_wall),
            ("Engine API exec (create+start+inspect)", api_lat, api_wall),
            ("`docker exec` CLI loop", cli_lat, cli_wall),
            ("`docker run --rm` loop", run_lat, run_wall),
        ]
        print(f"{n} no-op steps, pool of {args.pool}, concurrency {args.pool}, median of {args.repeat} "
              f"rounds for every runner; latency: sequential no-op "
              f"({args.latency_steps} steps for the engine, net of a 1-step run)\n")
        print(f"| runner | latency per step | {n} steps at {args.pool} | steps/s |")
        print("|---|---:|---:|---:|")
        for name, lat, wall in rows:
            print(f"| {name} | {lat * 1000:.0f} ms | {wall:.1f} s | {n / wall:.1f} |")
        print()
        print(f"- latency: engine / raw API exec = {eng_lat / api_lat:.2f} x (target <= 1.15)")
        print(f"- throughput: engine / raw API exec = {api_wall / eng_wall:.2f} x (target >= 0.9)")
        print(f"- per step vs `docker run --rm`: {run_wall / eng_wall:.1f} x faster at concurrency {args.pool}, "
              f"{run_lat / eng_lat:.1f} x sequentially (target >= 6)")
        print(f"- per step vs `docker exec` CLI: {cli_wall / eng_wall:.1f} x faster at concurrency {args.pool}")
        print(f"- the floor on this machine: the raw API exec is {run_wall / api_wall:.1f} x faster than `docker run "
              f"--rm` at concurrency {args.pool}, {run_lat / api_lat:.1f} x sequentially")
    finally:
        compose_file = os.path.join(state, "compose", project + ".yaml")
        if os.path.exists(compose_file):
            subprocess.run(["docker-compose", "-p", project, "-f", compose_file, "down", "--timeout", "0"],
                           capture_output=True)
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                              capture_output=True, text=True).stdout.split()
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
