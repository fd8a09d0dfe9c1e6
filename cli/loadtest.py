"""``docnum loadtest``: a bounded load generator against a running docnum on loopback.

Fixed concurrency (closed loop, ``--concurrency``) or fixed arrival rate (open loop, ``--rate``;
latency is measured from each request's scheduled start, so a slow server cannot hide queueing);
one hot counter key or many (``--keys``); sync ``/generate`` or async ``/requests`` + polling;
``--burst N`` submits N async requests at once. Afterwards it checks in the database that every
number of the run is distinct, every counter of the run is contiguous from 1 and agrees with its
ledger, and every number has exactly one audit row.

``--target lock`` drives the lock design that docnum replaces (``scripts/lock_design/app.py``,
docs/benchmarks.md#method) with the same bodies and verifies its own tables instead. A request
that is not answered with a number (a 503, any non-2xx) counts as failed, not served.
``--cpu GROUP=PID,...`` reports the CPU those processes spent during the measured run, per
served request (docs/benchmarks.md#method).

Each run numbers under its own project code, so runs never mix. The client is asyncio with
keep-alive HTTP/1.1 connections (standard library only) to keep its own CPU small.

A service with its default rate limits (10 issuing requests a minute per user) answers nearly
everything ``429``: when most answers are ``429 RATE_LIMITED`` the run stops early and says
which budget refused and which variable raises it (docs/benchmarks.md#reproduce).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from docnum.shared.settings import Settings

BASE = "/api/v1/document-numbering"
MAX_DURATION_S = 600
MAX_REQUESTS = 200_000
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The numbering config of every run, and the lock design's fixed template: the same numbers
# from the same bodies on both targets.
TEMPLATE = "{PROJECT}-{ORIGINATOR}-{RECIPIENT}-{SEQ:6}-{YYYY}"
RESET = "YEARLY"
CORRESPONDENCE_TYPE = "LETTER"
# Many keys are spread like a real deployment's: originator/recipient pairs times years.
KEY_YEARS = 4
ORIGINATORS_PER_RECIPIENT = 4


@dataclass(frozen=True)
class Target:
    """Where a design keeps what ``verify_run`` checks (same column names in both designs)."""

    name: str
    ledger: str
    counters: str
    audit: str
    async_routes: bool


TARGETS = {
    "docnum": Target("docnum", "document_numbers", "counters", "audit_log", True),
    "lock": Target("lock", "lock_ledger", "lock_counters", "lock_audit", False),
}


def _same_day_in(day: date, year: int) -> date:
    try:
        return day.replace(year=year)
    except ValueError:  # 29 February in a common year
        return day.replace(year=year, day=28)


def key_bodies(project: str, keys: int, today: date) -> list[dict]:
    """One request body per counter key.

    ``keys`` a multiple of 4: ``keys / 4`` originator/recipient pairs times 4 years (this year
    and the 3 before; the template resets yearly), so 64 keys are 16 pairs x 4 years. Otherwise
    ``keys`` pairs in this year (1 = one hot counter). Consecutive requests go to different
    pairs.
    """
    years = KEY_YEARS if keys % KEY_YEARS == 0 else 1
    pairs = keys // years
    bodies = []
    for index in range(keys):
        pair, back = index % pairs, index // pairs
        bodies.append({"project": project, "correspondence_type": CORRESPONDENCE_TYPE,
                       "originator": f"ORG{pair % ORIGINATORS_PER_RECIPIENT}",
                       "recipient": f"R{pair // ORIGINATORS_PER_RECIPIENT:03d}",
                       "document_date": _same_day_in(today, today.year - back).isoformat()})
    return bodies


def _cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()  # the name may hold spaces and parentheses
    return int(fields[11]) + int(fields[12])


class CpuSampler:
    """CPU of process groups over the measured run, from ``/proc/<pid>/stat``; the load
    generator's own from ``time.process_time``."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        self.before: dict[int, int | None] = {}
        self.own = 0.0

    def start(self) -> None:
        self.before = {pid: _cpu_ticks(pid) for pids in self.groups.values() for pid in pids}
        self.own = time.process_time()

    def stop(self) -> dict[str, float]:
        own_ms = (time.process_time() - self.own) * 1000
        spent: dict[str, float] = {}
        for group, pids in self.groups.items():
            total = 0
            for pid in pids:
                before, after = self.before.get(pid), _cpu_ticks(pid)
                if before is not None and after is not None:
                    total += after - before
            spent[group] = round(total * self.tick_ms, 1)
        spent["loadgen"] = round(own_ms, 1)
        return spent


def parse_cpu_groups(values: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for value in values:
        name, _, raw = value.partition("=")
        try:
            pids = [int(p) for p in raw.split(",") if p.strip()]
        except ValueError:
            raise SystemExit(f"--cpu takes GROUP=PID[,PID...], got {value!r}") from None
        if not name or name == "loadgen":
            raise SystemExit(f"--cpu needs a group name other than loadgen, got {value!r}")
        groups.setdefault(name, []).extend(pids)
    return groups


# Stop once at least this many answers came back and more than this share of them were 429.
RATE_LIMITED_MIN_ANSWERS = 50
RATE_LIMITED_SHARE = 0.5
# The budgets of api/ratelimit.py, by the words of its 429 detail.
RATE_LIMIT_VARIABLES = {"per user": "DOCNUM_RATE_LIMIT_USER", "per IP": "DOCNUM_RATE_LIMIT_IP"}


class HttpConnection:
    """A minimal keep-alive HTTP/1.1 client connection (JSON in, JSON out)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                    f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            try:
                self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                await self.writer.drain()
                return await self._read_response()
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _read_response(self) -> tuple[int, dict[str, str], bytes]:
        assert self.reader is not None
        # The whole head in one read: the generator shares the CPU with the service it measures.
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers: dict[str, str] = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Results:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    numbers: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    rate_limit_details: dict[str, int] = field(default_factory=dict)

    def record(self, status: int, latency_ms: float, number: str | None,
               error: str | None) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if number is not None:
            self.numbers.append(number)
            self.latencies_ms.append(latency_ms)
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1

    def record_rate_limited(self, detail: str) -> None:
        self.rate_limit_details[detail] = self.rate_limit_details.get(detail, 0) + 1

    def rate_limited(self) -> bool:
        """Most answers so far were 429: measuring on would only measure the refusals."""
        answers = sum(self.statuses.values())
        return (answers >= RATE_LIMITED_MIN_ANSWERS
                and self.statuses.get(429, 0) > RATE_LIMITED_SHARE * answers)

    def rate_limit_advice(self) -> str:
        """Which budget refused, and the variable that raises it."""
        answers = sum(self.statuses.values())
        refused = self.statuses.get(429, 0)
        detail = max(self.rate_limit_details, key=self.rate_limit_details.get, default="")
        names = [v for words, v in RATE_LIMIT_VARIABLES.items() if words in detail] or \
            list(RATE_LIMIT_VARIABLES.values())
        example = " ".join(f"{name}=100000/minute" for name in RATE_LIMIT_VARIABLES.values())
        return (f"stopped early: {refused} of {answers} answers were 429 RATE_LIMITED"
                f"{f' ({detail})' if detail else ''}. The service's issuing budget is the limit, "
                f"not its speed: raise {' and '.join(names)} in the service's environment and "
                f"restart it, e.g. {example} docnum up")

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)
        elapsed = max(self.finished - self.started, 1e-9)
        requests = sum(self.statuses.values())
        failed = requests - len(self.numbers)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

        # Served means answered with a number; latencies are those of served requests.
        return {"completed": len(self.numbers), "elapsed_s": round(elapsed, 2),
                "rate_per_s": round(len(self.numbers) / elapsed, 1),
                "requests": requests, "failed": failed,
                "failed_pct": round(100 * failed / requests, 2) if requests else 0.0,
                "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
                "max_ms": round(lat[-1], 1) if lat else None,
                "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
                "statuses": self.statuses, "errors": self.errors}


class Client:
    def __init__(self, url: str, token: str, project: str, keys: int, mode: str,
                 timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.hostname not in LOOPBACK:
            raise SystemExit("docnum loadtest only targets loopback addresses")
        self.host, self.port = parts.hostname, parts.port or 80
        self.token, self.project, self.keys = token, project, keys
        self.mode, self.timeout_s = mode, timeout_s
        self.pool: list[HttpConnection] = []
        self.counter = 0
        self.bodies = [json.dumps(body).encode()
                       for body in key_bodies(project, keys, date.today())]

    def body(self) -> bytes:
        self.counter += 1
        return self.bodies[self.counter % self.keys]

    def _conn(self) -> HttpConnection:
        return self.pool.pop() if self.pool else HttpConnection(self.host, self.port)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                "Idempotency-Key": uuid.uuid4().hex}

    async def one(self, results: Results, scheduled: float) -> None:
        conn = self._conn()
        try:
            body = self.body()
            if self.mode == "sync":
                status, _, raw = await conn.request(
                    "POST", f"{BASE}/generate?timeout={self.timeout_s:g}", self.headers(), body)
                if status == 202:
                    status, raw = await self._poll(conn, json.loads(raw)["status_url"])
            else:
                status, _, raw = await conn.request("POST", f"{BASE}/requests", self.headers(),
                                                    body)
                if status == 202:
                    status, raw = await self._poll(conn, json.loads(raw)["status_url"])
            latency = (time.perf_counter() - scheduled) * 1000
            data = json.loads(raw) if raw else {}
            if status == 429:
                results.record_rate_limited(str(data.get("detail") or ""))
            number = (data.get("document_number") or (data.get("result") or {}).get(
                "document_number")) if 200 <= status < 300 else None
            error = None if number else str(data.get("code") or data.get("error") or status)
            results.record(status, latency, number, error)
        except Exception as exc:  # count it, keep loading
            conn.close()
            results.record(0, 0.0, None, type(exc).__name__)
        finally:
            self.pool.append(conn)

    async def _poll(self, conn: HttpConnection, url: str) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"}
        delay = 0.02
        while True:
            await asyncio.sleep(delay)
            status, _, raw = await conn.request("GET", url, headers)
            data = json.loads(raw)
            if status != 200 or data.get("status") in ("succeeded", "failed"):
                return (201 if data.get("status") == "succeeded" else status), raw
            delay = min(delay * 1.5, 0.5)


async def run_closed(client: Client, concurrency: int, duration: float, limit: int) -> Results:
    results = Results(started=time.perf_counter())
    deadline = results.started + duration
    issued = 0

    async def loop() -> None:
        nonlocal issued
        while time.perf_counter() < deadline and issued < limit and not results.rate_limited():
            issued += 1
            await client.one(results, time.perf_counter())

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    results.finished = time.perf_counter()
    return results


async def run_open(client: Client, rate: float, duration: float, limit: int) -> Results:
    results = Results(started=time.perf_counter())
    total = min(int(rate * duration), limit)
    tasks = []
    for i in range(total):
        if results.rate_limited():
            break
        scheduled = results.started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.one(results, scheduled)))
    await asyncio.gather(*tasks)
    results.finished = time.perf_counter()
    return results


async def run_burst(client: Client, count: int) -> tuple[Results, float]:
    """Submit ``count`` async requests at once; returns results and the time to accept all."""
    results = Results(started=time.perf_counter())
    accepted: list[str] = []
    sem = asyncio.Semaphore(256)

    async def submit() -> None:
        async with sem:
            if results.rate_limited():
                return
            conn = client._conn()
            try:
                status, _, raw = await conn.request("POST", f"{BASE}/requests",
                                                    client.headers(), client.body())
                if status == 202:
                    accepted.append(json.loads(raw)["status_url"])
                else:
                    if status == 429:
                        results.record_rate_limited(str(json.loads(raw).get("detail") or ""))
                    results.record(status, 0, None, f"submit {status}")
            finally:
                client.pool.append(conn)

    await asyncio.gather(*(submit() for _ in range(count)))
    accept_s = time.perf_counter() - results.started

    async def collect(url: str) -> None:
        async with sem:
            conn = client._conn()
            try:
                status, raw = await client._poll(conn, url)
                number = (json.loads(raw).get("result") or {}).get("document_number")
                results.record(status, (time.perf_counter() - results.started) * 1000, number,
                               None if number else "failed")
            finally:
                client.pool.append(conn)

    await asyncio.gather(*(collect(u) for u in accepted))
    results.finished = time.perf_counter()
    return results, accept_s


def setup_run(settings: Settings, project: str, keys: int) -> None:
    """Catalog codes and one LETTER config for this run's own project (docnum target)."""
    from docnum.shared.catalog import upsert_entry
    from docnum.shared.clock import SystemClock
    from docnum.shared.configs import insert_config
    from docnum.shared.db import get_engine, transaction
    from docnum.shared.refcache import bump_generation, generation_redis

    now = SystemClock().now()
    with transaction(get_engine(settings.database_url)) as session:
        upsert_entry(session, "project", project, project, True, now)
        upsert_entry(session, "correspondence_type", CORRESPONDENCE_TYPE, "Letter", True, now)
        bodies = key_bodies(project, keys, now.date())
        for code in sorted({b[f] for b in bodies for f in ("originator", "recipient")}):
            upsert_entry(session, "organization", code, f"Organization {code}", True, now)
        insert_config(session, {"project": project, "correspondence_type": CORRESPONDENCE_TYPE,
                                "template": TEMPLATE, "reset": RESET}, "loadtest", now)
    bump_generation(generation_redis(settings))


def verify_run(database_url: str, project: str, numbers: list[str],
               target: Target = TARGETS["docnum"]) -> dict:
    """Distinct numbers; every counter of the run holds exactly 1..N and says N; one audit row
    per number; every answer in the ledger."""
    from sqlalchemy import text

    from docnum.shared.db import get_engine

    # Table names come from TARGETS, never from the command line.
    with get_engine(database_url).connect() as conn:
        rows = conn.execute(text(
            f"SELECT counter_key, sequence, document_number FROM {target.ledger} "
            "WHERE project = :project"), {"project": project}).all()
        counters = dict(conn.execute(text(
            f"SELECT counter_key, last_sequence FROM {target.counters} "
            "WHERE project = :project"), {"project": project}).all())
        audits = dict(conn.execute(text(
            f"SELECT a.document_number, COUNT(*) FROM {target.audit} a "
            f"JOIN {target.ledger} l ON l.document_number = a.document_number "
            "WHERE l.project = :project AND a.operation = 'GENERATE' AND a.success = 1 "
            "GROUP BY a.document_number"), {"project": project}).all())
    by_key: dict[str, list[int]] = {}
    for row in rows:
        by_key.setdefault(row.counter_key, []).append(row.sequence)
    contiguous = all(sorted(s) == list(range(1, len(s) + 1)) for s in by_key.values())
    counters_agree = all(counters.get(key) == len(s) for key, s in by_key.items()) and \
        all(last == 0 or key in by_key for key, last in counters.items())
    ledger_numbers = {r.document_number for r in rows}
    distinct = len(ledger_numbers) == len(rows)
    one_audit_each = len(audits) == len(ledger_numbers) and \
        all(count == 1 for count in audits.values())
    answered = set(numbers) <= ledger_numbers
    answers_distinct = len(set(numbers)) == len(numbers)
    return {"target": target.name, "ledger_rows": len(rows), "answers": len(numbers),
            "answers_distinct": answers_distinct, "ledger_distinct": distinct,
            "counters": len(by_key), "contiguous": contiguous, "counters_agree": counters_agree,
            "audit_rows": sum(audits.values()), "one_audit_each": one_audit_each,
            "answers_in_ledger": answered,
            "ok": distinct and contiguous and counters_agree and one_audit_each and answered
            and answers_distinct}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="docnum loadtest", description=__doc__.split("\n")[0])
    p.add_argument("--url", default=None, help="service URL (default http://DOCNUM_HOST:PORT)")
    p.add_argument("--mode", choices=("sync", "async"), default="sync")
    p.add_argument("--keys", type=int, default=1,
                   help="counter keys (1 = hot key; a multiple of 4: originator/recipient "
                        "pairs x 4 years, so 64 = 16 pairs x 4 years)")
    p.add_argument("--concurrency", type=int, default=32, help="closed loop: clients")
    p.add_argument("--rate", type=float, default=0, help="open loop: requests per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds (at most 600)")
    p.add_argument("--max-requests", type=int, default=MAX_REQUESTS)
    p.add_argument("--burst", type=int, default=0, help="submit N async requests at once")
    p.add_argument("--timeout", type=float, default=10.0, help="?timeout= for /generate")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured warm-up")
    p.add_argument("--project", default=None, help="project code (default: a fresh one)")
    p.add_argument("--target", choices=sorted(TARGETS), default="docnum",
                   help="docnum, or the lock design it replaces (sync only; its own tables "
                        "are verified)")
    p.add_argument("--cpu", action="append", default=[], metavar="GROUP=PID[,PID...]",
                   help="report these processes' CPU during the measured run (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str]) -> int:
    from docnum.shared.auth import mint_token
    from docnum.shared.settings import get_settings

    args = build_parser().parse_args(argv)
    duration = min(args.duration, MAX_DURATION_S)
    target = TARGETS[args.target]
    if args.keys < 1:
        raise SystemExit("--keys must be at least 1")
    if not target.async_routes and (args.mode == "async" or args.burst):
        raise SystemExit(f"--target {target.name} has no async routes: sync mode only")
    sampler = CpuSampler(parse_cpu_groups(args.cpu))
    settings = get_settings()
    url = args.url or f"http://{settings.host}:{settings.port}"
    if urlsplit(url).hostname not in LOOPBACK:  # before anything is written
        raise SystemExit("docnum loadtest only targets loopback addresses")
    project = args.project or f"LT{uuid.uuid4().hex[:8].upper()}"
    if target.name == "docnum":
        setup_run(settings, project, args.keys)  # the lock design has a fixed template
    token = mint_token(settings, "loadtest", ["correspondence.create", "correspondence.read"],
                       ttl_seconds=int(duration) + 3600)
    client = Client(url, token, project, args.keys, args.mode, args.timeout)

    limited: list[Results] = []

    async def go() -> tuple[dict, list[str], dict[str, float]]:
        numbers: list[str] = []
        if args.warmup > 0:
            warm = await run_closed(client, min(args.concurrency, 8), args.warmup, 1000)
            numbers += warm.numbers
            if warm.rate_limited():
                limited.append(warm)
                return warm.summary(), numbers, {}
        sampler.start()
        if args.burst:
            results, accept_s = await run_burst(client, min(args.burst, args.max_requests))
            cpu = sampler.stop()
            if results.rate_limited():
                limited.append(results)
            return {**results.summary(), "accepted_in_s": round(accept_s, 2)}, \
                numbers + results.numbers, cpu
        if args.rate:
            results = await run_open(client, args.rate, duration, args.max_requests)
        else:
            results = await run_closed(client, args.concurrency, duration, args.max_requests)
        cpu = sampler.stop()
        if results.rate_limited():
            limited.append(results)
        return results.summary(), numbers + results.numbers, cpu

    summary, numbers, cpu = asyncio.run(go())
    if limited:
        summary["stopped_early"] = limited[0].rate_limit_advice()
    report = {"project": project, "target": target.name, "mode": args.mode, "keys": args.keys,
              "concurrency": None if args.rate or args.burst else args.concurrency,
              "rate": args.rate or None, "burst": args.burst or None, **summary}
    served = summary["completed"]
    report["cpu_ms"] = cpu
    report["cpu_ms_per_served"] = {group: round(ms / served, 3) if served else None
                                   for group, ms in cpu.items()}
    # Verify everything the run produced, warm-up included.
    report["verify"] = verify_run(settings.database_url, project, numbers, target)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        for key, value in report.items():
            print(f"{key:>17}: {value}")
    if limited:
        print(f"docnum loadtest: {summary['stopped_early']}", file=sys.stderr)
    ok = report["verify"]["ok"] and not summary["errors"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
