#!/usr/bin/env python3
"""Two builds of docnum side by side in one run, measurements alternated (A, B, B, A, ...).

For comparing a change on a shared, loaded machine: both services run at once (``docnum up``
from each checkout's own ``.venv``, each on a fresh MariaDB database and its own Redis DBs), and
every round measures the hot key and 64 keys (``docnum loadtest``, closed loop, 32 connections)
on each, in alternating order, so that load from elsewhere falls on both alike. Prints one JSON
line per measurement and the medians per build.

Usage: .venv/bin/python scripts/bench_ab.py A_CHECKOUT B_CHECKOUT [--rounds 3] [--duration 20]
       [--redis redis://127.0.0.1:6379] [--ports 8791,8792]
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


def wait_ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--server", default="mysql+mysqldb://root@127.0.0.1:3306")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--ports", default="8791,8792")
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    builds = {}
    for slot, (label, checkout) in enumerate((("A", args.a), ("B", args.b))):
        repo = Path(checkout).resolve()
        database = f"docnum_ab_{label.lower()}_{secrets.token_hex(3)}"
        subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e",
                        f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"],
                       check=True)
        redis = [f"{args.redis}/{10 + 2 * slot}", f"{args.redis}/{11 + 2 * slot}"]
        for url in redis:
            subprocess.run(["redis-cli", "-u", url, "flushdb"], check=True, capture_output=True)
        env = dict(os.environ, DOCNUM_DATABASE_URL=f"{args.server}/{database}?charset=utf8mb4",
                   DOCNUM_BROKER_URL=redis[0], DOCNUM_RESULT_BACKEND=redis[1],
                   DOCNUM_JWT_SECRET=secrets.token_urlsafe(40), DOCNUM_PORT=str(ports[slot]),
                   DOCNUM_VAR_DIR=f"/tmp/{database}",
                   DOCNUM_RATE_LIMIT_USER="100000000/minute",
                   DOCNUM_RATE_LIMIT_IP="100000000/minute", DOCNUM_QUEUE_SHARDS="8")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        python = str(repo / ".venv" / "bin" / "python")
        service = subprocess.Popen([python, "-m", "docnum.cli.main", "up"], env=env, cwd=repo,
                                   stdout=open(f"/tmp/{database}.log", "wb"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        builds[label] = {"repo": repo, "env": env, "python": python, "service": service,
                         "database": database, "url": f"http://127.0.0.1:{ports[slot]}"}
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for build in builds.values():
            wait_ready(build["url"])
        for round_ in range(args.rounds):
            order = ("A", "B") if round_ % 2 == 0 else ("B", "A")
            for name, extra in (("hot_sync_32", []), ("keys64_sync_32", ["--keys", "64"])):
                for label in order:
                    build = builds[label]
                    out = subprocess.run(
                        [build["python"], "-m", "docnum.cli.main", "loadtest", "--url",
                         build["url"], "--json", "--concurrency", "32", "--duration",
                         str(args.duration), *extra],
                        env=build["env"], cwd=build["repo"], capture_output=True, text=True,
                        timeout=600)
                    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
                    data = json.loads(line)
                    results.setdefault((label, name), []).append(data["rate_per_s"])
                    print(json.dumps({"round": round_, "build": label, "measure": name,
                                      "rate_per_s": data["rate_per_s"],
                                      "p99_ms": data.get("p99_ms"),
                                      "errors": data.get("errors"),
                                      "verified": data.get("verify", {}).get("ok"),
                                      "load": os.getloadavg()[0]}), flush=True)
    finally:
        for build in builds.values():
            os.killpg(build["service"].pid, signal.SIGINT)
        for build in builds.values():
            try:
                build["service"].wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(build["service"].pid, signal.SIGKILL)
            subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e",
                            f"DROP DATABASE {build['database']}"])
    summary = {}
    for name in ("hot_sync_32", "keys64_sync_32"):
        a, b = results.get(("A", name), []), results.get(("B", name), [])
        if a and b:
            summary[name] = {"A": statistics.median(a), "B": statistics.median(b),
                             "B/A": round(statistics.median(b) / statistics.median(a), 3),
                             "A_runs": a, "B_runs": b}
    print(json.dumps({"summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
