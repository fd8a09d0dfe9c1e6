"""The ``docnum`` command line (SPEC §7)."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from shared.routing import MAINTENANCE_QUEUE, shard_queue


def _settings():  # noqa: ANN202
    from shared.settings import get_settings

    return get_settings()


def cmd_migrate(_args: argparse.Namespace) -> int:
    from shared.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    print(f"database at head: {_redact(settings.database_url)}")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<url>"


def cmd_api(args: argparse.Namespace) -> int:
    settings = _settings()
    # Deployments point DOCNUM_GUNICORN_CONFIG at deploy/gunicorn.conf.py (layered on ours).
    config = os.environ.get("DOCNUM_GUNICORN_CONFIG") or "python:api.gunicorn_conf"
    argv = [sys.executable, "-m", "gunicorn", "-c", config,
            "--bind", f"{settings.host}:{settings.port}"]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    argv.append("api.wsgi:app")
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
    from workers.celery_app import make_celery

    settings = _settings()
    if args.maintenance:
        queues, name = [MAINTENANCE_QUEUE], "maintenance"
    else:
        shards = _parse_shards(args.shards or "", settings.queue_shards)
        queues = [shard_queue(s) for s in shards]
        name = "shard" + "-".join(map(str, shards))
    celery = make_celery(settings)
    # One solo process per worker: each shard queue has exactly one consumer, which serves
    # its counters strictly one message after another.
    celery.worker_main(argv=["worker", "-Q", ",".join(queues), "-P", "solo", "-c", "1",
                             "-n", f"{name}@%h", "--without-mingle", "--without-gossip",
                             "-l", args.loglevel])
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    from workers.celery_app import make_celery

    settings = _settings()
    schedule = settings.var_dir / "celerybeat-schedule"
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    make_celery(settings).start(argv=["beat", "-s", str(schedule), "-l", args.loglevel])
    return 0


def cmd_flower(args: argparse.Namespace) -> int:
    from workers.celery_app import make_celery

    settings = _settings()
    argv = ["flower", f"--address={settings.flower_address}", f"--port={settings.flower_port}"]
    if settings.flower_basic_auth:
        argv.append(f"--basic_auth={settings.flower_basic_auth}")
    elif settings.flower_address not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("refusing to expose Flower beyond loopback without "
                         "DOCNUM_FLOWER_BASIC_AUTH")
    make_celery(settings).start(argv=argv)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from cli.supervisor import run_up

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cmd_migrate(args)
    metrics_dir = settings.var_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # stale samples from a previous run
    metrics_dir.mkdir(parents=True)
    print(f"docnum up: http://{settings.host}:{settings.port}  (Ctrl-C stops everything)")
    return run_up(settings.queue_shards, args.worker_processes, str(metrics_dir))


def cmd_token(args: argparse.Namespace) -> int:
    from shared.auth import mint_token

    perms = args.perm or ["correspondence.read", "correspondence.create"]
    key = Path(args.private_key).read_text() if args.private_key else None
    print(mint_token(_settings(), args.sub, perms, args.role or [], args.ttl, private_key=key))
    return 0


def cmd_catalog_load(args: argparse.Namespace) -> int:
    from shared.audit import Actor, write_audit
    from shared.catalog import parse_catalog_file, put_entry
    from shared.clock import SystemClock
    from shared.db import get_engine, transaction

    settings = _settings()
    path = Path(args.file)
    entries = parse_catalog_file(path.name, path.read_bytes())
    now = SystemClock().now()
    actor = Actor(sub=f"cli:{os.environ.get('USER', 'unknown')}", user_agent="docnum catalog load")
    changed = 0
    with transaction(get_engine(settings.database_url)) as session:
        for entry in entries:
            before, after = put_entry(session, entry["kind"], entry["code"], entry["name"],
                                      entry["active"], now)
            if before != after:
                changed += 1
                write_audit(session, "CATALOG_CHANGE", actor, now,
                            before=before.to_dict() if before else None, after=after.to_dict())
    print(f"{len(entries)} entries read, {changed} created or changed")
    return 0


def cmd_loadtest(args: argparse.Namespace) -> int:
    from cli.loadtest import main as loadtest_main

    return loadtest_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="docnum", description="Document numbering service")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="API + shard workers + maintenance worker + beat")
    up.add_argument("--worker-processes", type=int, default=4,
                    help="shard worker processes; shards are spread over them (default 4)")
    up.set_defaults(func=cmd_up)

    api = sub.add_parser("api", help="the HTTP API (gunicorn)")
    api.add_argument("--workers", type=int, default=0, help="gunicorn worker processes")
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="a Celery worker for shard queues or maintenance")
    group = worker.add_mutually_exclusive_group(required=True)
    group.add_argument("--shards", help="comma list of shard numbers this process consumes")
    group.add_argument("--maintenance", action="store_true", help="the maintenance queue")
    worker.add_argument("--loglevel", default="info")
    worker.set_defaults(func=cmd_worker)

    beat = sub.add_parser("beat", help="Celery beat (maintenance schedule); run exactly one")
    beat.add_argument("--loglevel", default="info")
    beat.set_defaults(func=cmd_beat)

    sub.add_parser("flower", help="Flower on loopback").set_defaults(func=cmd_flower)
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

    loadtest = sub.add_parser("loadtest", help="load generator against a running service",
                              add_help=False)
    loadtest.add_argument("rest", nargs=argparse.REMAINDER)
    loadtest.set_defaults(func=cmd_loadtest)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
