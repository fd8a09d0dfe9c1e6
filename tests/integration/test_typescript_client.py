"""The OpenAPI document serves a TypeScript caller (a NestJS backend, say): types generated from
the served document with openapi-typescript, and a small openapi-fetch client
(tests/typescript/client.ts) that previews, generates, retries, submits and polls, reserves and
confirms, looks a number up, pages through the catalog and configs and switches on
``error.code``, must compile under ``tsc --strict`` without a cast, and then runs against a live
service (its answers are checked against the document as well: tests/contract_check.py).

The Node packages come from tests/typescript/package-lock.json (``npm ci`` when node_modules is
missing). Without ``node`` on the machine the test is skipped, saying so.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import BASE, CATALOG

PACKAGE = Path(__file__).resolve().parents[1] / "typescript"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: the TypeScript client cannot be checked")
    modules = PACKAGE / "node_modules"
    if not (modules / ".bin" / "tsc").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True,
                       timeout=600, capture_output=True)
    return modules


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _code_without_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    return re.sub(r"//[^\n]*", "", source)


def test_client_source_has_no_casts():
    code = _code_without_comments((PACKAGE / "client.ts").read_text())
    assert not re.search(r"\bas\s+(?!const\b)[A-Za-z_{(\[]", code), "a type assertion (as ...)"
    assert not re.search(r"<[A-Z]\w*>\s*[\w(]", code), "a type assertion (<T>value)"
    assert not re.search(r"[\w)\]]!(?=[.\[(;,)])", code), "a non-null assertion (value!)"
    assert not re.search(r"\bany\b", code), "an any"
    assert "@ts-" not in (PACKAGE / "client.ts").read_text(), "a @ts- directive"


def test_typescript_client_compiles_strict_and_runs(node_modules, client, live_server, seed,
                                                    token, tmp_path):
    ids = seed()
    document = client.get(f"{BASE}/openapi.json").json
    (tmp_path / "openapi.json").write_text(json.dumps(document, ensure_ascii=False),
                                           encoding="utf-8")
    for name in ("client.ts", "tsconfig.json", "package.json"):
        shutil.copy(PACKAGE / name, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(node_modules, target_is_directory=True)
    bin_dir = node_modules / ".bin"

    _run([str(bin_dir / "openapi-typescript"), "openapi.json", "-o", "docnum.d.ts"], tmp_path)
    _run([str(bin_dir / "tsc"), "-p", "tsconfig.json"], tmp_path)  # strict: see tsconfig.json
    bearer = token("nest-backend", None, ["SUPER_ADMIN"])
    run = uuid.uuid4().hex
    out = _run(["node", str(tmp_path / "out" / "client.js"), live_server, bearer, run], tmp_path,
               timeout=120)
    tour = json.loads(out.strip().splitlines()[-1])

    assert tour["first"] in tour["preview"]  # the preview showed the number issued next
    assert tour["retried"] == tour["first"]  # a retry with the same key: the same number
    assert len({tour["first"], tour["submitted"], tour["confirmed"][0]}) == 3
    assert tour["confirmed"][1] == "CONFIRMED"
    assert tour["history"][0] == "CONFIRMED"
    assert [h.split(" ")[0] for h in tour["history"][1:]] == ["RESERVE", "CONFIRM"]
    assert tour["missing"] == []
    assert tour["reused"] == "IDEMPOTENCY_KEY_REUSED"
    assert tour["explained"].startswith("use a new Idempotency-Key")
    assert sorted(tour["organizations"]) == sorted(CATALOG["organization"])
    assert tour["configs"] == sorted(ids.values())
