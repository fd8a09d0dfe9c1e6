"""``docnum up`` with no environment at all: SQLite + SQL broker under ./var, real Celery.

The README's first minute: start it, mint a token, load the catalog, create a config, issue
``คคง.-สคฉ.3-0001-2568`` over HTTP, then Ctrl-C stops every process.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import BASE, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _docnum(*args: str, cwd: Path, env: dict) -> str:
    result = subprocess.run([sys.executable, "-m", "docnum.cli.main", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_up_on_the_embedded_default(tmp_path: Path) -> None:
    port = _free_port()
    # Nothing of docnum's configuration: only where to find the code, and a free port.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCNUM_", "PROMETHEUS_"))}
    env.update(PYTHONPATH=str(REPO), DOCNUM_PORT=str(port), DOCNUM_QUEUE_SHARDS="2")
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "docnum.cli.main", "up", "--worker-processes", "1"],
                          cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                return requests.get(f"{url}/readyz", timeout=2).status_code == 200
            except requests.RequestException:  # not up yet, or too busy starting to answer
                return False

        wait_for(ready, timeout=90, interval=0.5, message="docnum up to be ready")
        assert requests.get(f"{url}/readyz").json() == {
            "database": "ok", "broker": "ok", "result_backend": "ok", "mode": "queue"}
        assert (tmp_path / "var" / "docnum.sqlite").exists()
        assert (tmp_path / "var" / "jwt_secret").exists()

        catalog = tmp_path / "catalog.yaml"
        catalog.write_text("project: [{code: LCBP3, name: LCBP3}]\n"
                           "organization: [{code: คคง., name: A}, {code: สคฉ.3, name: B}]\n"
                           "correspondence_type: [{code: LETTER, name: Letter}]\n",
                           encoding="utf-8")
        _docnum("catalog", "load", str(catalog), cwd=tmp_path, env=env)
        token = _docnum("token", "--sub", "newcomer", "--perm", "correspondence.create",
                        "--perm", "system.manage_settings", cwd=tmp_path, env=env)
        headers = {"Authorization": f"Bearer {token}"}
        config = requests.post(f"{url}{BASE}/configs", headers=headers, timeout=10, json={
            "project": "LCBP3", "correspondence_type": "LETTER",
            "template": "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}", "reset": "YEARLY"})
        assert config.status_code == 201, config.text
        issued = requests.post(f"{url}{BASE}/generate?timeout=20", timeout=30,
                               headers=dict(headers, **{"Idempotency-Key": "first-letter"}),
                               json={"project": "LCBP3", "correspondence_type": "LETTER",
                                     "originator": "คคง.", "recipient": "สคฉ.3",
                                     "document_date": "2025-06-01"})
        assert issued.status_code == 201, issued.text
        assert issued.json()["document_number"] == "คคง.-สคฉ.3-0001-2568"
    finally:
        started = time.monotonic()
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            raise
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text(errors="replace")[-3000:]
    assert time.monotonic() - started < 40
    # Every child is gone with it: nothing listens on the port any more.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=2)
