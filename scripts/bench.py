#!/usr/bin/env python3
"""The issue-5 benchmark, side by side in one run on this machine.

Starts docnum (``docnum up``: gunicorn + shard workers) against the machine's MariaDB and Redis
on a fresh database, then for each round measures the raw database ceiling (``docnum.cli.db_ceiling``,
4 connections) and the service: hot key sync at 32 connections, hot key at a fixed 200 req/s,
64 keys over 8 shards at 32 connections, and a burst of 5,000 async submissions. Prints one JSON
line per measurement and a summary of medians (with min-max) over the rounds.

Usage: .venv/bin/python scripts/bench.py [--rounds 3] [--duration 20] [--rate-duration 60]
Loopback only; every phase is bounded in time and count.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = str(REPO / ".venv" / "bin" / "python")


def run_json(argv: list[str], env: dict, timeout: float) -> dict:
    out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{argv[3:]} printed no JSON: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def wait_ready(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("service did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--rate-duration", type=float, default=60)
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--server", default="mysql+mysqldb://root@127.0.0.1:3306")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args()

    database = f"docnum_bench_{secrets.token_hex(3)}"
    subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e",
                    f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"],
                   check=True)
    port = 8790
    env = dict(os.environ,
               DOCNUM_DATABASE_URL=f"{args.server}/{database}?charset=utf8mb4",
               DOCNUM_BROKER_URL=f"{args.redis}/7", DOCNUM_RESULT_BACKEND=f"{args.redis}/8",
               DOCNUM_JWT_SECRET=secrets.token_urlsafe(40), DOCNUM_PORT=str(port),
               DOCNUM_VAR_DIR=f"/tmp/{database}", DOCNUM_RATE_LIMIT_USER="100000000/minute",
               DOCNUM_RATE_LIMIT_IP="100000000/minute", DOCNUM_QUEUE_SHARDS="8")
    for db in (7, 8):
        subprocess.run(["redis-cli", "-n", str(db), "flushdb"], check=True,
                       capture_output=True)
    service = subprocess.Popen([PY, "-m", "docnum.cli.main", "up"], env=env, cwd=REPO,
                               stdout=open(f"/tmp/{database}.log", "wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    results: dict[str, list[dict]] = {}
    out = open(args.out, "a") if args.out else None

    def record(name: str, data: dict) -> None:
        results.setdefault(name, []).append(data)
        line = json.dumps({"measure": name, **data}, ensure_ascii=False)
        print(line, flush=True)
        if out:
            out.write(line + "\n")

    loadtest = [PY, "-m", "docnum.cli.main", "loadtest", "--url", url, "--json"]
    try:
        wait_ready(url)
        for _ in range(args.rounds):
            record("db_ceiling_4", run_json([PY, "-m", "docnum.cli.db_ceiling", "4", "10"], env, 60))
            record("hot_sync_32", run_json(loadtest + ["--concurrency", "32", "--duration",
                                                       str(args.duration)], env, 300))
            record("hot_rate_200", run_json(loadtest + ["--rate", "200", "--duration",
                                                        str(args.rate_duration)], env, 300))
            record("keys64_sync_32", run_json(loadtest + ["--keys", "64", "--concurrency", "32",
                                                          "--duration", str(args.duration)],
                                              env, 300))
            record("burst_async", run_json(loadtest + ["--mode", "async", "--burst",
                                                       str(args.burst)], env, 300))
    finally:
        os.killpg(service.pid, signal.SIGINT)
        try:
            service.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
        subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE {database}"])

    def median(name: str, field: str) -> str:
        values = [r[field] for r in results.get(name, []) if r.get(field) is not None]
        if not values:
            return "n/a"
        return f"{statistics.median(values)} ({min(values)}-{max(values)})"

    summary = {
        "db_ceiling_4 commits/s": median("db_ceiling_4", "commits_per_s"),
        "hot sync 32 req/s": median("hot_sync_32", "rate_per_s"),
        "hot sync 32 p99 ms": median("hot_sync_32", "p99_ms"),
        "hot 200/s p99 ms": median("hot_rate_200", "p99_ms"),
        "hot 200/s achieved": median("hot_rate_200", "rate_per_s"),
        "64 keys sync 32 req/s": median("keys64_sync_32", "rate_per_s"),
        "burst accepted in s": median("burst_async", "accepted_in_s"),
        "burst completed": median("burst_async", "completed"),
        "burst elapsed s": median("burst_async", "elapsed_s"),
    }
    ratios = [h["rate_per_s"] / c["commits_per_s"] for h, c in
              zip(results.get("hot_sync_32", []), results.get("db_ceiling_4", []))]
    summary["hot/ceiling ratio"] = (f"{statistics.median(ratios):.2f} "
                                    f"({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "n/a")
    keys = [k["rate_per_s"] / h["rate_per_s"] for k, h in
            zip(results.get("keys64_sync_32", []), results.get("hot_sync_32", []))]
    summary["64keys/hot ratio"] = (f"{statistics.median(keys):.2f} "
                                   f"({min(keys):.2f}-{max(keys):.2f})" if keys else "n/a")
    errors = {name: [r.get("errors") for r in runs if r.get("errors")]
              for name, runs in results.items()}
    summary["errors"] = {k: v for k, v in errors.items() if v}
    summary["verified"] = all(r.get("verify", {}).get("ok", True)
                              for runs in results.values() for r in runs)
    print(json.dumps({"summary": summary}, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
