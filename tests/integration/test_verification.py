"""Tamper-evidence on real MariaDB (docs/verification.md): every kind of tampering a DBA can do
is named by ``docnum verify``; receipts stay provable offline; checkpoints link up."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text

from docnum.shared import (
    bulk_import,
    chain,
    checkpoints,
    lifecycle,
    maintenance,
    merkle,
    proofs,
    resets,
)
from docnum.shared import override as overrides
from docnum.shared.allocation import allocate_many, record_failures
from docnum.shared.audit import Actor, write_audit
from docnum.shared.clock import FixedClock, SystemClock
from docnum.shared.configs import update_config
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError
from docnum.shared.issuing import build_request, parse_context, prepare
from docnum.shared.models import AuditRow, Checkpoint, CheckpointLeaf, IssuedNumber
from docnum.shared.verify import verify
from tests.conftest import BASE, letter

CLOCK = SystemClock()
ALICE = Actor("alice", "127.0.0.1", "pytest", "req-1")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def issue(engine, settings, count: int = 1, mode: str = "generate",
          **overrides: object) -> list[dict]:
    ctx = parse_context(letter(**overrides))
    with transaction(engine) as session:
        config, counter_key, day = prepare(session, ctx, now=CLOCK.now(),
                                           timezone=settings.timezone)
    requests = [build_request(request_id=str(uuid.uuid4()), mode=mode, ctx=ctx, config=config,
                              counter_key=counter_key, day=day, actor="alice", now=CLOCK.now())
                for _ in range(count)]
    outcomes = allocate_many(engine, {counter_key: requests}, clock=CLOCK)[counter_key]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if o.error]
    return [o.number for o in outcomes]


def sql(engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def findings(engine, key) -> list:
    return verify(engine, key.public_key()).findings


def assert_named(engine, key, numbers: set[str], kind: str) -> None:
    """Verification names exactly ``numbers``, every finding of the kind ``kind``."""
    found = findings(engine, key)
    assert found and {f.document_number for f in found} == numbers, found
    assert {f.kind for f in found} == {kind}, found


def checkpoint(engine, key) -> dict:
    made = checkpoints.make_checkpoint(engine, key, CLOCK)
    assert made is not None
    return made


def receipt_of(engine, number: str, key=None) -> dict:
    with transaction(engine) as session:
        row = proofs.find_row(session, number, None)
        return proofs.number_proof(session, row, key.public_key() if key else None)


def rebuild_chains(engine, counter_key: str) -> None:
    """What a DBA without the signing key can do: recompute the ledger and audit chains of one
    counter from the rows as they are now, and store the new heads."""
    with transaction(engine) as session:
        heads = {}
        for kind, model in ((chain.LEDGER, IssuedNumber), (chain.AUDIT, AuditRow)):
            head = chain.Head()
            for row in session.scalars(select(model).where(model.counter_key == counter_key)
                                       .order_by(model.chain_pos)):
                values = {c.name: getattr(row, c.name) for c in model.__table__.columns}
                head.length += 1
                head.hash = row.row_hash = chain.link(head.hash, chain.ENCODERS[kind](values))
            heads[kind] = head
        session.execute(text("UPDATE counters SET ledger_head = :lh, audit_head = :ah "
                             "WHERE counter_key = :k"),
                        {"lh": heads[chain.LEDGER].hash, "ah": heads[chain.AUDIT].hash,
                         "k": counter_key})


def rewrite_log(engine, counter_key: str) -> None:
    """...and make the log's leaves of that counter agree with the rebuilt chains."""
    with transaction(engine) as session:
        for leaf in session.scalars(select(CheckpointLeaf).where(
                CheckpointLeaf.counter_key == counter_key)):
            model = IssuedNumber if leaf.kind == chain.LEDGER else AuditRow
            leaf.head = session.scalar(select(model.row_hash).where(
                model.counter_key == counter_key, model.chain_pos == leaf.length))
            leaf.leaf_hash = merkle.leaf_hash(chain.leaf_encoding(
                leaf.kind, leaf.counter_key, leaf.length, leaf.head))


# ------------------------------------------------------------------------ clean history

def test_every_writer_chains_its_rows_and_verify_finds_nothing(engine, settings, seed, key):
    ids = seed()
    tz = settings.timezone
    numbers = issue(engine, settings, 3)
    assert all(len(n["row_hash"]) == 64 for n in numbers)
    reserved = issue(engine, settings, 3, mode="reserve")
    lifecycle.confirm(engine, reserved[0]["reservation"]["token"], "DMS-1", ALICE, CLOCK)
    lifecycle.cancel(engine, reserved[1]["reservation"]["token"], "not sent", ALICE, CLOCK)
    later = FixedClock(CLOCK.now() + timedelta(hours=1))
    assert lifecycle.expire_overdue(engine, later) == {"expired": 1}
    replaced = lifecycle.void_and_replace(engine, {"document_number": numbers[0][
        "document_number"], "reason": "wrong recipient", "replace": True}, ALICE, CLOCK, tz)
    assert replaced["replacement"]["row_hash"] != numbers[0]["row_hash"]
    override = overrides.manual_override(engine, {**letter(), "document_number": "OLD/2019/001",
                                              "reason": "legacy paper register"},
                                     ALICE, CLOCK, tz)
    assert len(override["row_hash"]) == 64 and override["counter_key"] is None
    overrides.manual_override(engine, {**letter(), "document_number": "คคง.-สคฉ.3-0090-2568",
                                   "reason": "legacy paper register"}, ALICE, CLOCK, tz)
    csv = ("document_number,project,correspondence_type,originator,recipient,sub_type,"
           "rfa_type,discipline,document_date,state\n"
           "คคง.-สคฉ.3-0095-2568,LCBP3,LETTER,คคง.,สคฉ.3,,,,2025-06-15,CONFIRMED\n"
           "LEGACY-7,LCBP3,LETTER,คคง.,สคฉ.3,,,,2025-06-15,VOID\n").encode()
    report = bulk_import.bulk_import(engine, "legacy.csv", csv, ALICE, CLOCK, dry_run=False)
    assert report.imported == 2
    counter_key = numbers[1]["counter_key"]
    filed = resets.request_reset(engine, ids["LETTER"], {
        "counter_key": counter_key, "new_last_sequence": 120,
        "reason": "skip ahead past the paper register"}, ALICE, CLOCK)
    resets.approve_reset(engine, filed["reset_request_id"], Actor("bob"), CLOCK)
    resets.approve_reset(engine, filed["reset_request_id"], Actor("carol"), CLOCK)
    update_config(engine, ids["MEMO"], {"active": True, "change_reason": "a verification check"},
                  ALICE, CLOCK, redis=None)
    with transaction(engine) as session:
        write_audit(session, "CATALOG_CHANGE", ALICE, CLOCK.now(), after={"code": "X"})
    ctx = parse_context(letter())
    with transaction(engine) as session:
        config, key_, day = prepare(session, ctx, now=CLOCK.now(), timezone=tz)
    record_failures(engine, [build_request(request_id=str(uuid.uuid4()), mode="generate",
                                           ctx=ctx, config=config, counter_key=key_, day=day,
                                           actor="alice", now=CLOCK.now())],
                    DocnumError("SERVICE_BUSY", "test"), clock=CLOCK)
    assert findings(engine, key) == []
    first = checkpoint(engine, key)
    assert first["checkpoint"] == 1 and first["tree_size"] > 0
    # Audit rows archived by maintenance keep their place on their chains.
    moved = maintenance.archive_audit(engine, FixedClock(CLOCK.now() + timedelta(days=800)))
    assert moved["archived"] > 0
    issue(engine, settings, 2)
    second = checkpoint(engine, key)
    assert findings(engine, key) == []
    with transaction(engine) as session:
        proof = checkpoints.consistency(session, 1, 2)
    assert checkpoints.verify_consistency(proof) is None
    assert second["tree_size"] > first["tree_size"]
    assert checkpoints.make_checkpoint(engine, key, CLOCK) is None  # nothing grew
    for number in (numbers[2]["document_number"], "OLD/2019/001", "LEGACY-7",
                   replaced["replacement"]["document_number"]):
        receipt = receipt_of(engine, number, key)
        assert receipt["status"] == "checkpointed", number
        assert proofs.verify_receipt(receipt, key.public_key()) == [], number


# ------------------------------------------------------------------------ tampering

def test_update_of_issued_at_is_named(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 5)
    target = numbers[2]["document_number"]
    sql(engine, "UPDATE document_numbers SET issued_at = issued_at - INTERVAL 3 DAY "
                "WHERE document_number = :n", n=target)
    assert_named(engine, key, {target}, "edited")


def test_deleted_voided_number_is_named(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 3)
    target = numbers[1]["document_number"]
    lifecycle.void_and_replace(engine, {"document_number": target, "reason": "wrong"}, ALICE,
                               CLOCK, settings.timezone)
    assert findings(engine, key) == []
    sql(engine, "DELETE FROM document_numbers WHERE document_number = :n", n=target)
    found = findings(engine, key)
    assert any(f.kind == "deleted" and f.document_number == target for f in found), found
    gap = [f for f in found if f.kind == "deleted" and f.position == 2]
    assert gap and numbers[0]["document_number"] in gap[0].detail


def test_inserted_back_dated_row_is_named(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 3)
    forged = numbers[2]["document_number"].replace("-0003-", "-0004-")
    sql(engine, "INSERT INTO document_numbers (document_number, project, counter_key, sequence,"
                " state, source, config_id, config_version, template, correspondence_type,"
                " originator, recipient, document_date, request_id, issued_by, issued_at)"
                " SELECT :n, project, counter_key, 4, 'CONFIRMED', 'GENERATE', config_id,"
                " config_version, template, correspondence_type, originator, recipient,"
                " document_date, :rid, issued_by, issued_at - INTERVAL 30 DAY"
                " FROM document_numbers WHERE document_number = :src",
        n=forged, rid=str(uuid.uuid4()), src=numbers[2]["document_number"])
    sql(engine, "UPDATE counters SET last_sequence = 4 WHERE counter_key = :k",
        k=numbers[2]["counter_key"])
    assert_named(engine, key, {forged}, "inserted")


def test_inserted_row_with_a_computed_hash_is_still_named(engine, settings, seed, key):
    """A DBA who knows the encoding appends a correctly hashed row and moves the head: the
    chain holds, but no audit row ever issued the number."""
    seed()
    numbers = issue(engine, settings, 2)
    source = numbers[1]["document_number"]
    forged = source.replace("-0002-", "-0003-")
    with transaction(engine) as session:
        row = session.scalar(select(IssuedNumber).where(IssuedNumber.document_number == source))
        values = {c.name: getattr(row, c.name) for c in IssuedNumber.__table__.columns}
        values.update(id=None, document_number=forged, sequence=3, chain_pos=3,
                      request_id=str(uuid.uuid4()))
        values["row_hash"] = chain.link(bytes(row.row_hash), chain.ledger_encoding(values))
        session.add(IssuedNumber(**values))
        session.execute(text("UPDATE counters SET last_sequence = 3, ledger_length = 3, "
                             "ledger_head = :h WHERE counter_key = :k"),
                        {"h": values["row_hash"], "k": row.counter_key})
    assert_named(engine, key, {forged}, "inserted")


def test_swapped_sequences_are_named(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 4)
    a, b = numbers[1]["document_number"], numbers[2]["document_number"]
    sql(engine, "UPDATE document_numbers SET sequence = -sequence WHERE document_number IN "
                "(:a, :b)", a=a, b=b)
    sql(engine, "UPDATE document_numbers SET sequence = CASE document_number WHEN :a THEN 3 "
                "ELSE 2 END WHERE document_number IN (:a, :b)", a=a, b=b)
    assert_named(engine, key, {a, b}, "edited")


def test_deleted_last_row_with_the_counter_rolled_back_is_named(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 3)
    last = numbers[-1]
    sql(engine, "DELETE FROM document_numbers WHERE document_number = :n",
        n=last["document_number"])
    sql(engine, "UPDATE counters SET last_sequence = 2 WHERE counter_key = :k",
        k=last["counter_key"])
    found = findings(engine, key)
    assert any(f.kind == "deleted" and f.document_number == last["document_number"]
               for f in found), found
    assert any(f.kind == "deleted" and f.position == 3 and f.table == "document_numbers"
               for f in found), found


def test_rewritten_audit_row_is_named(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 3)
    target = numbers[1]["document_number"]
    with transaction(engine) as session:
        audit_id = session.scalar(select(AuditRow.id).where(AuditRow.document_number == target))
    sql(engine, "UPDATE audit_log SET actor = 'mallory' WHERE id = :i", i=audit_id)
    found = findings(engine, key)
    assert len(found) == 1, found
    assert (found[0].kind, found[0].table, found[0].row_id, found[0].document_number) == (
        "edited", "audit_log", audit_id, target)


def test_chain_rebuilt_without_the_key_is_caught_by_the_checkpoint(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 4)
    checkpoint(engine, key)
    target, counter_key = numbers[1]["document_number"], numbers[1]["counter_key"]
    # Back-date number 2, its audit row with it, and recompute every hash after it.
    sql(engine, "UPDATE document_numbers SET issued_at = issued_at - INTERVAL 7 DAY "
                "WHERE document_number = :n", n=target)
    sql(engine, "UPDATE audit_log SET created_at = created_at - INTERVAL 7 DAY "
                "WHERE document_number = :n", n=target)
    rebuild_chains(engine, counter_key)
    found = findings(engine, key)
    assert found and {f.kind for f in found} == {"checkpoint"}, found
    assert all(f.counter_key == counter_key for f in found)
    assert "checkpoint 1" in found[0].detail
    # Rewriting the log to match breaks the signed root...
    rewrite_log(engine, counter_key)
    found = findings(engine, key)
    assert [f.kind for f in found] == ["checkpoint"]
    assert "signed root" in found[0].detail
    # ...and rewriting the root breaks the signature.
    with transaction(engine) as session:
        stored = list(session.scalars(select(CheckpointLeaf.leaf_hash)
                                      .order_by(CheckpointLeaf.leaf_index)))
        session.execute(text("UPDATE checkpoints SET root_hash = :r WHERE id = 1"),
                        {"r": merkle.root(stored)})
    found = findings(engine, key)
    assert [f.kind for f in found] == ["signature"]
    assert found[0].row_id == 1
    with pytest.raises(checkpoints.CheckpointRefused):
        checkpoints.make_checkpoint(engine, key, CLOCK)


def test_a_chain_that_does_not_extend_its_recorded_head_is_withheld(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 2)
    checkpoint(engine, key)
    sql(engine, "UPDATE document_numbers SET issued_by = 'mallory' WHERE document_number = :n",
        n=numbers[0]["document_number"])
    rebuild_chains(engine, numbers[0]["counter_key"])
    issue(engine, settings, 1)
    made = checkpoint(engine, key)
    # The ledger chain was rewritten under checkpoint 1: left out. Its audit chain holds.
    withheld = made["note"]["withheld"]
    assert [(w["chain"], w["counter_key"]) for w in withheld] == [
        (chain.LEDGER, numbers[0]["counter_key"])]
    assert made["note"]["leaves_added"] == 1


# ------------------------------------------------------------------------ receipts

def test_receipt_from_before_tampering_still_verifies_and_consistency_fails(
        engine, settings, seed, key, tmp_path):
    seed()
    numbers = issue(engine, settings, 3)
    checkpoint(engine, key)
    target, counter_key = numbers[1]["document_number"], numbers[1]["counter_key"]
    receipt = receipt_of(engine, target, key)
    assert receipt["status"] == "checkpointed"
    assert receipt["row_hash"] == numbers[1]["row_hash"]
    issue(engine, settings, 2)
    checkpoint(engine, key)
    with transaction(engine) as session:
        honest = checkpoints.consistency(session, 1, 2)
    assert checkpoints.verify_consistency(honest) is None

    sql(engine, "UPDATE document_numbers SET issued_at = issued_at - INTERVAL 7 DAY "
                "WHERE document_number = :n", n=target)
    sql(engine, "UPDATE audit_log SET created_at = created_at - INTERVAL 7 DAY "
                "WHERE document_number = :n", n=target)
    rebuild_chains(engine, counter_key)
    rewrite_log(engine, counter_key)

    # The receipt is self-contained: still proves the number as issued, under checkpoint 1.
    assert proofs.verify_receipt(receipt, key.public_key()) == []
    # The log the database serves now no longer extends checkpoint 1.
    with transaction(engine) as session:
        after = checkpoints.consistency(session, 1, 2)
    assert after["first"] == receipt["checkpoint"]
    problem = checkpoints.verify_consistency(after)
    assert problem and "does not extend checkpoint 1" in problem
    # A receipt made now, from the rewritten rows, does not verify.
    fresh = receipt_of(engine, target, key)
    assert proofs.verify_receipt(fresh, key.public_key()) != []

    # The same through `docnum verify-receipt`, offline.
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    (tmp_path / "receipt.json").write_text(json.dumps(receipt, ensure_ascii=False))
    (tmp_path / "later.json").write_text(json.dumps(after))
    (tmp_path / "honest.json").write_text(json.dumps(honest))
    base = [sys.executable, "-m", "docnum.cli.main", "verify-receipt",
            str(tmp_path / "receipt.json"), "--public-key", str(tmp_path / "pub.pem")]
    ok = subprocess.run(base, capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK:") and target in ok.stdout
    linked = subprocess.run(base + ["--consistency", str(tmp_path / "honest.json")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert linked.returncode == 0, linked.stdout
    broken = subprocess.run(base + ["--consistency", str(tmp_path / "later.json")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert broken.returncode == 1 and "does not extend checkpoint 1" in broken.stdout


def test_receipt_fails_when_any_part_is_changed(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 3)
    checkpoint(engine, key)
    receipt = receipt_of(engine, numbers[0]["document_number"], key)
    assert len(receipt["chain"]["entries"]) == 3  # from the row to the recorded head
    assert proofs.verify_receipt(receipt, key.public_key()) == []
    other = Ed25519PrivateKey.generate().public_key()
    assert proofs.verify_receipt(receipt, other) != []

    def changed(mutate) -> list[str]:
        copy = json.loads(json.dumps(receipt))
        mutate(copy)
        return proofs.verify_receipt(copy, key.public_key())

    entry = json.loads(receipt["chain"]["entries"][0])
    entry["issued_at"] = "2020-01-01T00:00:00.000000Z"
    back_dated = chain.canonical(entry).decode()
    assert changed(lambda r: r["chain"]["entries"].__setitem__(0, back_dated))
    assert changed(lambda r: r.__setitem__("document_number", numbers[1]["document_number"]))
    assert changed(lambda r: r["chain"]["entries"].pop())
    assert changed(lambda r: r["leaf"].__setitem__("index", r["leaf"]["index"] + 1))
    assert changed(lambda r: r["checkpoint"].__setitem__("tree_size", 99))
    assert changed(lambda r: r["checkpoint"]["note"].__setitem__("leaves_added", 0))
    assert changed(lambda r: r.__setitem__("format", "other"))


def test_a_number_after_the_latest_checkpoint_is_pending(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 1)
    receipt = receipt_of(engine, numbers[0]["document_number"], key)
    assert receipt["status"] == "pending"
    problems = proofs.verify_receipt(receipt, key.public_key())
    assert problems and "not yet in a signed checkpoint" in problems[0]


def test_long_chains_get_a_leaf_every_span_rows(engine, settings, seed, key, monkeypatch):
    monkeypatch.setattr(checkpoints, "SPAN", 4)
    seed()
    numbers = issue(engine, settings, 10)
    made = checkpoint(engine, key)
    with transaction(engine) as session:
        lengths = sorted(session.scalars(select(CheckpointLeaf.length).where(
            CheckpointLeaf.kind == chain.LEDGER,
            CheckpointLeaf.counter_key == numbers[0]["counter_key"])))
    assert lengths == [4, 8, 10]
    receipt = receipt_of(engine, numbers[1]["document_number"], key)
    assert receipt["leaf"]["length"] == 4 and len(receipt["chain"]["entries"]) == 3
    assert proofs.verify_receipt(receipt, key.public_key()) == []
    assert made["note"]["leaves_added"] >= 3


# ------------------------------------------------------------------------ docnum verify

def test_docnum_verify_exits_1_naming_the_row(engine, settings, seed, key, tmp_path,
                                              database_url):
    seed()
    numbers = issue(engine, settings, 3)
    checkpoint(engine, key)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (tmp_path / "key.pem").write_bytes(pem)
    env = dict(os.environ, DOCNUM_DATABASE_URL=database_url, DOCNUM_VAR_DIR=str(tmp_path),
               DOCNUM_SIGNING_KEY_FILE=str(tmp_path / "key.pem"), DOCNUM_JWT_SECRET="x" * 40)
    command = [sys.executable, "-m", "docnum.cli.main", "verify"]
    clean = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("OK: 3 ledger rows")
    target = numbers[0]["document_number"]
    sql(engine, "UPDATE document_numbers SET document_date = '2025-01-01' "
                "WHERE document_number = :n", n=target)
    tampered = subprocess.run(command + ["--json"], capture_output=True, text=True, env=env,
                              cwd=tmp_path)
    assert tampered.returncode == 1
    report = json.loads(tampered.stdout)
    assert [(f["kind"], f["document_number"]) for f in report["findings"]] == [
        ("edited", target)]
    # Without a key the signatures cannot be checked: a different exit status, not "OK".
    env.pop("DOCNUM_SIGNING_KEY_FILE")
    unchecked = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert unchecked.returncode == 2 and "NOT checked" in unchecked.stdout


def test_checkpoint_refuses_without_a_key_in_production(database_url, engine, tmp_path):
    from docnum.shared.settings import load_settings

    settings = load_settings({"DOCNUM_DATABASE_URL": database_url,
                              "DOCNUM_BROKER_URL": "redis://127.0.0.1:1/0",
                              "DOCNUM_VAR_DIR": str(tmp_path), "DOCNUM_JWT_SECRET": "x" * 40})
    assert settings.signing_key_file is None  # MariaDB: not the embedded default
    result = checkpoints.run_checkpoint(engine, settings, CLOCK)
    assert "DOCNUM_SIGNING_KEY_FILE" in result["skipped"]
    with transaction(engine) as session:
        assert session.scalar(select(Checkpoint.id)) is None


def test_the_embedded_default_generates_its_key_once(tmp_path):
    from docnum.shared.settings import load_settings

    env = {"DOCNUM_VAR_DIR": str(tmp_path)}
    settings = load_settings(env)
    assert settings.signing_key_file == tmp_path / "signing_key.pem"
    first = checkpoints.load_signing_key(settings)
    again = checkpoints.load_signing_key(load_settings(env))
    assert checkpoints.key_id(first.public_key()) == checkpoints.key_id(again.public_key())
    assert oct((tmp_path / "signing_key.pem").stat().st_mode & 0o777) == "0o600"
    named = load_settings({**env, "DOCNUM_SIGNING_KEY_FILE": str(tmp_path / "absent.pem")})
    with pytest.raises(checkpoints.SigningKeyMissing):
        checkpoints.load_signing_key(named)


def test_checkpoint_beat_task_runs_under_its_lease(settings, engine, seed, key, tmp_path):
    from docnum.workers import maintenance as beat

    seed()
    issue(engine, settings, 1)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (tmp_path / "key.pem").write_bytes(pem)
    keyed = settings.with_overrides(signing_key_file=tmp_path / "key.pem")
    result = beat.run_locked(keyed, "checkpoint", lambda: checkpoints.run_checkpoint(
        engine, keyed, CLOCK))
    assert result["checkpoint"] == 1 and result["withheld"] == 0
    assert beat.run_locked(keyed, "checkpoint", lambda: checkpoints.run_checkpoint(
        engine, keyed, CLOCK)) == {"unchanged": True}


# ------------------------------------------------------------------------ HTTP API

def test_answers_carry_row_hash_and_the_proof_route_serves_receipts(app, client, auth, seed,
                                                                    engine, settings):
    seed()
    made = client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth())
    assert made.status_code == 201, made.json
    number = made.json
    assert len(number["row_hash"]) == 64
    # The same row_hash wherever the number is read.
    again = client.get(f"{BASE}/numbers/{number['document_number']}", headers=auth())
    assert again.json["row_hash"] == number["row_hash"]
    status = client.get(made.headers["Location"], headers=auth())
    assert status.json["result"]["row_hash"] == number["row_hash"]

    key = checkpoints.load_signing_key(settings)
    pending = client.get(f"{BASE}/numbers/{number['document_number']}/proof", headers=auth())
    assert pending.status_code == 200 and pending.json["status"] == "pending"
    assert client.get(f"{BASE}/checkpoints/latest", headers=auth()).status_code == 404
    checkpoint(engine, key)
    proof = client.get(f"{BASE}/numbers/{number['document_number']}/proof", headers=auth())
    assert proof.status_code == 200, proof.json
    receipt = proof.json
    assert receipt["row_hash"] == number["row_hash"]
    published = client.get(f"{BASE}/checkpoints/public-key")  # no credentials needed
    assert published.status_code == 200
    public = checkpoints.load_public_key(published.json["public_key"].encode())
    assert published.json["key_id"] == receipt["checkpoint"]["key_id"]
    assert proofs.verify_receipt(receipt, public) == []
    by_query = client.get(f"{BASE}/proofs", query_string={
        "document_number": number["document_number"]}, headers=auth())
    assert by_query.json["row_hash"] == receipt["row_hash"]

    listed = client.get(f"{BASE}/checkpoints", headers=auth()).json
    assert [c["checkpoint"] for c in listed["items"]] == [1]
    assert client.get(f"{BASE}/checkpoints/1", headers=auth()).json == listed["items"][0]
    assert client.get(f"{BASE}/checkpoints/2", headers=auth()).status_code == 404
    client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth())
    checkpoint(engine, key)
    linked = client.get(f"{BASE}/checkpoints/consistency?first=1&second=2", headers=auth())
    assert linked.status_code == 200 and checkpoints.verify_consistency(linked.json) is None
    assert client.get(f"{BASE}/checkpoints/consistency?first=2&second=1",
                      headers=auth()).status_code == 422
    assert client.get(f"{BASE}/checkpoints/consistency?first=x&second=1",
                      headers=auth()).status_code == 422
    assert client.get(f"{BASE}/numbers/NO-SUCH/proof", headers=auth()).status_code == 404
    assert client.get(f"{BASE}/numbers/{number['document_number']}/proof",
                      headers=auth(perms=[])).status_code == 403


def test_numbers_with_slashes_route_to_the_right_receipt(client, auth, seed, engine, settings):
    seed()
    for number in ("OLD/2019/001", "OLD/2019/001/proof"):
        made = client.post(f"{BASE}/admin/manual-override", headers=auth(), json={
            **letter(), "document_number": number, "reason": "legacy paper register"})
        assert made.status_code == 201, made.json
    checkpoint(engine, checkpoints.load_signing_key(settings))
    # "OLD/2019/001/proof" is a number: the path keeps meaning its details...
    details = client.get(f"{BASE}/numbers/OLD/2019/001/proof", headers=auth())
    assert details.json["document_number"] == "OLD/2019/001/proof" and "history" in details.json
    # ...its receipt is one more /proof away, and its prefix's receipt is in the query form.
    own = client.get(f"{BASE}/numbers/OLD/2019/001/proof/proof", headers=auth())
    assert own.json["document_number"] == "OLD/2019/001/proof" and "chain" in own.json
    prefix = client.get(f"{BASE}/proofs?document_number=OLD/2019/001", headers=auth())
    assert prefix.json["document_number"] == "OLD/2019/001" and "chain" in prefix.json
    assert client.get(f"{BASE}/numbers/OLD/2019/001", headers=auth()).json[
        "document_number"] == "OLD/2019/001"


def test_console_lookup_shows_the_verification_state(app, token, client, auth, seed, engine,
                                                     settings):
    from tests.integration.test_console import console_client

    seed()
    made = client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth())
    number = made.json["document_number"]
    console = console_client(app, token, "reader", ["correspondence.read"])

    def state() -> str:
        page = console.get("/console/numbers", query_string={"number": number})
        return page.get_data(as_text=True)

    assert 'data-verification="pending"' in state()
    checkpoint(engine, checkpoints.load_signing_key(settings))
    page = state()
    assert 'data-verification="verified"' in page and made.json["row_hash"] in page
    sql(engine, "UPDATE document_numbers SET issued_by = 'mallory' WHERE document_number = :n",
        n=number)
    page = state()
    assert 'data-verification="failed"' in page and "was changed" in page


@pytest.mark.parametrize(("a", "b"), [(1, 2), (1, 4)])
def test_swapped_chain_positions_are_named_reordered(engine, settings, seed, key, a, b):
    seed()
    numbers = issue(engine, settings, 5)
    x, y = numbers[a - 1]["document_number"], numbers[b - 1]["document_number"]
    sql(engine, "UPDATE document_numbers SET chain_pos = CASE document_number WHEN :x THEN :b "
                "ELSE :a END WHERE document_number IN (:x, :y)", x=x, y=y, a=a, b=b)
    found = findings(engine, key)
    assert {(f.kind, f.document_number) for f in found} == {("reordered", x),
                                                            ("reordered", y)}, found


def test_two_processes_find_what_one_finds(engine, settings, seed, key):
    seed()
    numbers = issue(engine, settings, 4)
    checkpoint(engine, key)
    sql(engine, "UPDATE document_numbers SET issued_at = issued_at - INTERVAL 1 DAY "
                "WHERE document_number = :n", n=numbers[1]["document_number"])
    sql(engine, "UPDATE audit_log SET actor = 'mallory' WHERE document_number = :n",
        n=numbers[2]["document_number"])
    one = verify(engine, key.public_key())
    two = verify(engine, key.public_key(), jobs=2)
    assert sorted(f.line() for f in one.findings) == sorted(f.line() for f in two.findings)
    assert {f.document_number for f in two.findings} == {numbers[1]["document_number"],
                                                         numbers[2]["document_number"]}
    assert (two.ledger_rows, two.audit_rows, two.checkpoints) == (4, 4, 1)
