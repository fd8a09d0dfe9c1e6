"""`docnum flower`: loopback only, basic auth from DOCNUM_FLOWER_BASIC_AUTH."""
from __future__ import annotations

import subprocess

import psutil
import pytest
import requests

from tests.e2e.service import DOCNUM, RedisServer, Service, docnum_env, free_port

pytestmark = pytest.mark.e2e


def test_flower_binds_loopback_and_asks_for_basic_auth(tmp_path):
    port = free_port()
    with RedisServer(tmp_path / "redis") as redis:
        env = docnum_env(f"sqlite:///{tmp_path / 'docnum.sqlite'}", redis.url(0), redis.url(1),
                         tmp_path / "var", DOCNUM_FLOWER_PORT=str(port),
                         DOCNUM_FLOWER_BASIC_AUTH="ops:s3cret-pass")
        with Service(env, tmp_path / "logs", api=False, workers=(), flower=True) as svc:
            base = f"http://127.0.0.1:{port}"
            assert requests.get(base + "/", timeout=5).status_code == 401
            assert requests.get(base + "/", auth=("ops", "wrong"), timeout=5).status_code == 401
            page = requests.get(base + "/", auth=("ops", "s3cret-pass"), timeout=5)
            assert page.status_code == 200 and "Flower" in page.text
            # The REST API (it can apply and revoke tasks) is behind the same auth.
            assert requests.get(base + "/api/workers", timeout=5).status_code == 401
            # Flower exempts these two from auth; binding to loopback is what protects them.
            assert requests.get(base + "/healthcheck", timeout=5).status_code == 200
            assert requests.get(base + "/metrics", timeout=5).status_code == 200
            flower = psutil.Process(svc.processes["flower"].popen.pid)
            listening = [c.laddr for c in flower.net_connections(kind="inet")
                         if c.status == psutil.CONN_LISTEN]
            assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
            assert svc.stop() == {"flower": 0}


def test_flower_refuses_a_public_address_without_auth(tmp_path):
    env = docnum_env(f"sqlite:///{tmp_path / 'docnum.sqlite'}", "redis://127.0.0.1:1/0",
                     "redis://127.0.0.1:1/1", tmp_path / "var", DOCNUM_FLOWER_ADDRESS="0.0.0.0",
                     DOCNUM_FLOWER_PORT=str(free_port()))
    service = Service(env, tmp_path / "logs", api=False, workers=())
    result = subprocess.run([DOCNUM, "flower"], env=service.env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert "DOCNUM_FLOWER_BASIC_AUTH" in result.stderr
