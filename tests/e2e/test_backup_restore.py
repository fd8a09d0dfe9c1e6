"""scripts/backup and scripts/restore against real servers, with the real service issuing.

1. A throwaway database on the machine's MariaDB (log_bin OFF, like a standalone server):
   issue, back up while the service runs, drop the database, restore, the counter continues.
2. A private MariaDB with a binary log (like the production primary): point-in-time recovery,
   i.e. restore the last backup and replay the binlog up to the moment before the accident, so
   the numbers issued AFTER the backup survive too.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from docnum.shared.auth import mint_token
from tests.conftest import ALL_PERMS, BASE, letter, make_settings
from tests.e2e.service import (
    REPO,
    MariaDBServer,
    RedisServer,
    Service,
    docnum_env,
    prepare_database,
)

pytestmark = pytest.mark.e2e

BACKUP = str(REPO / "scripts" / "backup")
RESTORE = str(REPO / "scripts" / "restore")


def run(script: str, *args: str, database_url: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCNUM_")}
    full_env.update(DOCNUM_DATABASE_URL=database_url, **env)
    return subprocess.run([script, *args], env=full_env, capture_output=True, text=True,
                          timeout=60)


class Issuer:
    """The service (API + one worker on a private Redis) on a given database."""

    def __init__(self, database_url: str, tmp_path: Path, redis: RedisServer) -> None:
        env = docnum_env(database_url, redis.url(0), redis.url(1), tmp_path / "var")
        settings = make_settings(database_url, redis.url(0), redis.url(1), tmp_path / "var")
        self.token = mint_token(settings, "alice", ALL_PERMS, [], 900)
        self.service = Service(env, tmp_path / "logs", workers=["0,1,2,3"])

    def issue(self) -> dict:
        response = self.service.post(f"{BASE}/generate?timeout=20", json=letter(), headers={
            "Authorization": f"Bearer {self.token}", "Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 201, response.text
        return response.json()


def age(path: Path, days: float) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


def test_backup_drop_restore_and_the_counter_continues(server_db_url, tmp_path):
    name = f"docnum_bk_{secrets.token_hex(4)}"
    admin = create_engine(server_db_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    url = make_url(server_db_url).set(database=name).render_as_string(hide_password=False)
    backups = tmp_path / "backups"
    backups.mkdir()
    # Retention: an expired backup goes, a young one and anything that is not a backup stay.
    expired = backups / "docnum-old-20000101T000000Z.sql.gz"
    young = backups / "docnum-old-20000102T000000Z.sql.gz"
    notes = backups / "README.txt"
    for path, days in ((expired, 40), (young, 3), (notes, 400)):
        path.write_bytes(b"")
        age(path, days)
    try:
        prepare_database(url)
        with RedisServer(tmp_path / "redis") as redis:
            issuer = Issuer(url, tmp_path, redis)
            with issuer.service:
                issued = [issuer.issue()["document_number"] for _ in range(3)]
                assert issued[-1] == "คคง.-สคฉ.3-0003-2568"
                # A hot backup: the service keeps running.
                result = run(BACKUP, str(backups), database_url=url)
                assert result.returncode == 0, result.stderr
            backup = Path(result.stdout.strip().splitlines()[-1])
            assert backup.parent == backups and backup.name.startswith(f"docnum-{name}-")
            assert backup.name.endswith("Z.sql.gz") and backup.stat().st_size > 0
            assert oct(backup.stat().st_mode & 0o777) == "0o600"
            assert "binlog position not recorded" in result.stderr  # log_bin is OFF here
            assert not expired.exists() and young.exists() and notes.exists()

            # The disaster.
            with admin.begin() as conn:
                conn.execute(text(f"DROP DATABASE `{name}`"))
            refused = run(RESTORE, str(backups), database_url=url)
            assert refused.returncode == 2 and "--yes" in refused.stderr
            restored = run(RESTORE, "--yes", str(backups), database_url=url)
            assert restored.returncode == 0, restored.stderr
            assert backup.name in restored.stderr and "3 ledger rows" in restored.stderr

            with issuer.service:
                after = issuer.issue()
            assert after["document_number"] == "คคง.-สคฉ.3-0004-2568"
            assert after["sequence"] == 4
    finally:
        from docnum.shared.db import dispose_engines

        dispose_engines()
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def test_restore_refuses_a_truncated_backup(server_db_url, tmp_path):
    broken = tmp_path / "docnum-x-20260101T000000Z.sql.gz"
    subprocess.run(f"echo 'CREATE TABLE half (' | gzip > {broken}", shell=True, check=True)
    url = make_url(server_db_url).set(database="docnum_never_created").render_as_string(
        hide_password=False)
    result = run(RESTORE, "--yes", str(broken), database_url=url)
    assert result.returncode == 1 and "incomplete" in result.stderr


@pytest.mark.skipif(not MariaDBServer.available(), reason="needs mariadbd")
def test_point_in_time_recovery_from_backup_and_binlog(tmp_path):
    with MariaDBServer(binlog=True) as server, RedisServer(tmp_path / "redis") as redis:
        server.execute("CREATE DATABASE docnum CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = server.url("docnum")
        prepare_database(url)
        issuer = Issuer(url, tmp_path, redis)
        with issuer.service:
            assert [issuer.issue()["sequence"] for _ in range(2)] == [1, 2]
            result = run(BACKUP, str(tmp_path / "backups"), database_url=url)
            assert result.returncode == 0, result.stderr
            assert "binlog position recorded" in result.stderr
            # Numbers issued after the last backup: only the binlog has them.
            assert [issuer.issue()["sequence"] for _ in range(2)] == [3, 4]
        # The accident, and where the binlog stands just before it.
        binlog, stop_position = server.execute("SHOW MASTER STATUS")[0][:2]
        server.execute("DROP DATABASE docnum")

        restored = run(RESTORE, "--yes", str(tmp_path / "backups"), database_url=url)
        assert restored.returncode == 0, restored.stderr
        assert "2 ledger rows" in restored.stderr
        line = next(x for x in restored.stderr.splitlines() if "MASTER_LOG_FILE" in x)
        start_file = line.split("MASTER_LOG_FILE='")[1].split("'")[0]
        start_position = int(line.split("MASTER_LOG_POS=")[1].rstrip(";"))
        assert start_file == binlog
        # Replay from the backup's position to just before the DROP (docs/operations.md).
        replay = subprocess.run(
            f"mariadb-binlog --start-position={start_position} --stop-position={stop_position} "
            f"--database=docnum {server.datadir / binlog} "
            f"| mariadb -uroot -h127.0.0.1 -P{server.port} docnum",
            shell=True, capture_output=True, text=True, timeout=60)
        assert replay.returncode == 0, replay.stderr
        assert server.execute("SELECT MAX(sequence), COUNT(*) FROM document_numbers",
                              "docnum") == [(4, 4)]
        with issuer.service:
            assert issuer.issue()["sequence"] == 5
