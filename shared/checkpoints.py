"""Signed checkpoints over the chain heads (docs/verification.md#checkpoints).

The log: an append-only list of leaves in ``checkpoint_leaves``, each recording one chain's head
at one length (``chain.leaf_encoding``). A checkpoint run appends a leaf for every chain that
grew since its last leaf (and one at every 1,024th row on the way, so that the chain a receipt
carries from its row to a recorded head stays short), in a stable order (kind, counter key,
length), then signs the RFC 9162 Merkle root of the whole log with the deployment's Ed25519 key.
Because the log only grows, any two checkpoints are linked by a consistency proof.

A run refuses to sign what it cannot vouch for: the previous checkpoint must carry this key's
valid signature and the stored leaves must still give its root, and each grown chain is walked
from its last recorded head to its new head; a chain that does not extend its recorded head
(rewritten, rows removed) gets no new leaf and is named in the checkpoint's note
(``withheld``).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from docnum.shared import chain, merkle
from docnum.shared.clock import Clock, iso, to_db
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError
from docnum.shared.models import (
    AuditArchiveRow,
    AuditRow,
    ChainBackfill,
    ChainHead,
    Checkpoint,
    CheckpointLeaf,
    Counter,
    IssuedNumber,
)
from docnum.shared.settings import Settings, create_private_file

log = logging.getLogger(__name__)

#: Every SPAN-th row of a chain gets a leaf of its own: a receipt's chain is at most this long.
SPAN = 1024
CHECKPOINT_TYPE = "docnum.checkpoint.v1"


class SigningKeyMissing(RuntimeError):
    """No signing key: checkpoints cannot be made (production without DOCNUM_SIGNING_KEY_FILE)."""


class CheckpointRefused(RuntimeError):
    """The stored log no longer gives the previous checkpoint's signed root: nothing is signed."""


# --------------------------------------------------------------------------- keys

def key_id(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 of the raw 32-byte public key."""
    import hashlib

    return hashlib.sha256(raw_public(public)).hexdigest()[:16]


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The key of ``DOCNUM_SIGNING_KEY_FILE`` (PKCS#8 PEM, e.g. ``openssl genpkey -algorithm
    ed25519``); generated once under ``./var/`` on the embedded default."""
    path = settings.signing_key_file
    if path is None:
        raise SigningKeyMissing("no signing key: set DOCNUM_SIGNING_KEY_FILE to an Ed25519 "
                                "private key (docs/verification.md#the-signing-key)")
    if not path.exists():
        if not settings.signing_key_generate:
            raise SigningKeyMissing(f"DOCNUM_SIGNING_KEY_FILE {path} does not exist")
        create_private_file(path, Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyMissing(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """A public key from a PEM (public or private) or the raw 32 bytes as hex."""
    text = data.strip()
    if text.startswith(b"-----BEGIN PRIVATE KEY"):
        key = serialization.load_pem_private_key(text, password=None)
        if isinstance(key, Ed25519PrivateKey):
            return key.public_key()
    elif text.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(text)
        if isinstance(key, Ed25519PublicKey):
            return key
    else:
        try:
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode()))
        except ValueError:
            pass
    raise ValueError("not an Ed25519 key (PEM, or 64 hex digits of the raw public key)")


def public_key_document(public: Ed25519PublicKey) -> dict:
    return {"algorithm": "Ed25519", "key_id": key_id(public),
            "public_key": raw_public(public).hex(), "pem": public_pem(public)}


# --------------------------------------------------------------------------- signed statement

def signed_body(checkpoint: dict) -> bytes:
    """What the signature covers: the canonical JSON of the checkpoint without its signature."""
    return chain.canonical({"type": CHECKPOINT_TYPE, "checkpoint": checkpoint["checkpoint"],
                            "tree_size": checkpoint["tree_size"],
                            "root_hash": checkpoint["root_hash"],
                            "created_at": checkpoint["created_at"],
                            "key_id": checkpoint["key_id"], "note": checkpoint["note"]})


def checkpoint_dict(row: Checkpoint) -> dict:
    return {"checkpoint": int(row.id), "tree_size": int(row.tree_size),
            "root_hash": bytes(row.root_hash).hex(), "created_at": iso(row.created_at),
            "key_id": row.key_id, "note": row.note, "signature": bytes(row.signature).hex()}


def check_signature(checkpoint: dict, public: Ed25519PublicKey) -> str | None:
    """None when ``checkpoint`` is signed by ``public``; otherwise why not."""
    if checkpoint.get("key_id") != key_id(public):
        return (f"checkpoint {checkpoint.get('checkpoint')} names key {checkpoint.get('key_id')}, "
                f"not {key_id(public)}")
    try:
        public.verify(bytes.fromhex(checkpoint["signature"]), signed_body(checkpoint))
    except (InvalidSignature, ValueError, KeyError):
        return f"checkpoint {checkpoint.get('checkpoint')}: the signature does not verify"
    return None


# --------------------------------------------------------------------------- the log

@dataclass(frozen=True)
class Leaf:
    index: int
    kind: str
    counter_key: str | None
    length: int
    head: bytes

    def encoding(self) -> bytes:
        return chain.leaf_encoding(self.kind, self.counter_key, self.length, self.head)

    def to_dict(self) -> dict:
        return {"index": self.index, "chain": self.kind, "counter_key": self.counter_key,
                "length": self.length, "head": self.head.hex()}


def leaf_hashes(session: Session) -> list[bytes]:
    """The stored leaf hashes, in log order."""
    return [bytes(h) for h in session.scalars(
        select(CheckpointLeaf.leaf_hash).order_by(CheckpointLeaf.leaf_index))]


def iter_leaves(session: Session) -> Iterator[tuple[Leaf, bytes]]:
    """Every leaf with its stored hash, in log order."""
    t = CheckpointLeaf.__table__
    result = session.connection().execution_options(stream_results=True, yield_per=5000).execute(
        select(t.c.leaf_index, t.c.kind, t.c.counter_key, t.c.length, t.c.head, t.c.leaf_hash)
        .order_by(t.c.leaf_index))
    for index, kind, key, length, head, stored in result:
        yield Leaf(int(index), kind, key, int(length), bytes(head)), bytes(stored)


def latest(session: Session) -> Checkpoint | None:
    return session.scalar(select(Checkpoint).order_by(Checkpoint.id.desc()).limit(1))


def get(session: Session, checkpoint_id: int) -> Checkpoint:
    row = session.get(Checkpoint, checkpoint_id)
    if row is None:
        raise DocnumError("NOT_FOUND", f"no checkpoint {checkpoint_id}")
    return row


def list_checkpoints(session: Session, after_id: int | None, limit: int) -> list[dict]:
    stmt = select(Checkpoint).order_by(Checkpoint.id)
    if after_id is not None:
        stmt = stmt.where(Checkpoint.id > after_id)
    return [checkpoint_dict(r) for r in session.scalars(stmt.limit(limit))]


def consistency(session: Session, first_id: int, second_id: int) -> dict:
    """The RFC 9162 consistency proof between two checkpoints, from the stored log."""
    if first_id > second_id:
        raise DocnumError("VALIDATION_FAILED", "first must not be after second")
    first, second = get(session, first_id), get(session, second_id)
    hashes = leaf_hashes(session)
    if len(hashes) < second.tree_size:
        raise DocnumError("CONFLICT", f"the log has {len(hashes)} leaves, fewer than checkpoint "
                                      f"{second_id} signed ({second.tree_size})")
    proof = merkle.consistency_proof(hashes, int(first.tree_size), int(second.tree_size))
    return {"first": checkpoint_dict(first), "second": checkpoint_dict(second),
            "proof": [p.hex() for p in proof]}


def verify_consistency(document: dict) -> str | None:
    """None when ``document`` (an answer of ``consistency``) holds; otherwise why not."""
    try:
        first, second = document["first"], document["second"]
        merkle.verify_consistency(first["tree_size"], second["tree_size"],
                                  bytes.fromhex(first["root_hash"]),
                                  bytes.fromhex(second["root_hash"]),
                                  [bytes.fromhex(p) for p in document["proof"]])
    except merkle.ProofError as exc:
        return f"checkpoint {document['second']['checkpoint']} does not extend checkpoint " \
               f"{document['first']['checkpoint']}: {exc}"
    except (KeyError, TypeError, ValueError) as exc:
        return f"not a consistency proof document ({exc})"
    return None


# --------------------------------------------------------------------------- making one

@dataclass
class _Chain:
    kind: str
    counter_key: str | None
    length: int
    head: bytes


def current_heads(session: Session) -> list[_Chain]:
    """Every non-empty chain's head as stored, in the log's stable order."""
    chains: list[_Chain] = []
    for key, ll, lh, al, ah in session.execute(
            select(Counter.counter_key, Counter.ledger_length, Counter.ledger_head,
                   Counter.audit_length, Counter.audit_head)
            .where((Counter.ledger_length > 0) | (Counter.audit_length > 0))):
        if ll:
            chains.append(_Chain(chain.LEDGER, key, int(ll), bytes(lh or b"")))
        if al:
            chains.append(_Chain(chain.AUDIT, key, int(al), bytes(ah or b"")))
    for kind, length, head in session.execute(select(ChainHead.kind, ChainHead.length,
                                                     ChainHead.head)):
        if length:
            chains.append(_Chain(kind, None, int(length), bytes(head or b"")))
    chains.sort(key=lambda c: (c.kind, c.counter_key or "", c.counter_key is not None))
    return chains


def recorded_heads(session: Session) -> dict[tuple[str, str | None], tuple[int, bytes]]:
    """The last leaf of every chain in the log: (kind, counter key) -> (length, head)."""
    t = CheckpointLeaf.__table__
    last = (select(t.c.kind, t.c.counter_key, func.max(t.c.length).label("length"))
            .group_by(t.c.kind, t.c.counter_key).subquery())
    rows = session.execute(select(t.c.kind, t.c.counter_key, t.c.length, t.c.head).join(
        last, and_(t.c.kind == last.c.kind, t.c.length == last.c.length,
                   (t.c.counter_key == last.c.counter_key)
                   | (t.c.counter_key.is_(None) & last.c.counter_key.is_(None)))))
    return {(kind, key): (int(length), bytes(head)) for kind, key, length, head in rows}


def extends(session: Session, target: _Chain, recorded: tuple[int, bytes] | None
            ) -> tuple[bool, list[tuple[int, bytes]]]:
    """Walk ``target``'s chain from its recorded head to its current head.

    Returns (ok, [(length, hash)] at every SPAN-th position on the way): ok when every row in
    between is there once, in order, hashes as stored, and the walk ends at the stored head.
    """
    length, previous = recorded if recorded else (0, chain.GENESIS)
    if target.length < length:
        return False, []
    encode = chain.ENCODERS[target.kind]
    at = encode.columns.index("chain_pos") + 1
    marks: list[tuple[int, bytes]] = []
    position = length
    for row in chain_rows(session, target.kind, target.counter_key, length, target.length):
        if row[at] != position + 1 or row[0] is None:
            return False, []
        digest = chain.link(previous, encode.values(row[1:]))
        if digest != bytes(row[0]):
            return False, []
        position, previous = position + 1, digest
        if position % SPAN == 0 and position < target.length:
            marks.append((position, digest))
    return position == target.length and previous == target.head, marks


def chain_rows(session: Session, kind: str, counter_key: str | None, after: int, upto: int,
               window: int = 50_000) -> Iterator[tuple]:
    """Rows of one chain with positions in (after, upto], by position (archive included), read
    a window of positions at a time: tuples of ``row_hash`` and then the encoded columns in
    encoding order, so that ``chain.ENCODERS[kind].values(row[1:])`` encodes them straight from
    the driver's rows."""
    tables = [IssuedNumber.__table__] if kind == chain.LEDGER else \
        [AuditArchiveRow.__table__, AuditRow.__table__]
    columns = chain.ENCODERS[kind].columns
    at = columns.index("chain_pos") + 1
    for start in range(after, upto, window):
        end = min(start + window, upto)
        rows: list[tuple] = []
        for table in tables:
            key = table.c.counter_key == counter_key if counter_key is not None else \
                table.c.counter_key.is_(None)
            rows += session.execute(
                select(table.c.row_hash, *[table.c[c] for c in columns])
                .where(key, table.c.chain_pos > start, table.c.chain_pos <= end)
                .order_by(table.c.chain_pos, table.c.id)).all()
        if len(tables) > 1:
            rows.sort(key=lambda r: r[at])
        yield from rows


def make_checkpoint(engine: Engine, key: Ed25519PrivateKey, clock: Clock) -> dict | None:
    """Append the grown chains' heads to the log and sign its root; None when nothing grew
    (and a checkpoint exists). Raises CheckpointRefused when the stored log is not the one the
    previous checkpoint signed."""
    public = key.public_key()
    # Signed as stored: DATETIME(6) keeps the microseconds, so it reads back as the same text.
    now_db = to_db(clock.now())
    with transaction(engine) as session:
        previous = latest(session)
        hashes = leaf_hashes(session)
        if previous is not None:
            bad = check_signature(checkpoint_dict(previous), public)
            if bad:
                raise CheckpointRefused(f"{bad}; run `docnum verify` (nothing was signed)")
            size = int(previous.tree_size)
            if len(hashes) < size or merkle.root(hashes, 0, size) != bytes(previous.root_hash):
                raise CheckpointRefused(
                    f"the stored log no longer gives checkpoint {previous.id}'s signed root; "
                    "run `docnum verify` (nothing was signed)")
            hashes = hashes[:size]
        recorded = recorded_heads(session)
        leaves: list[Leaf] = []
        withheld: list[dict] = []
        for target in current_heads(session):
            seen = recorded.get((target.kind, target.counter_key))
            if seen is not None and seen == (target.length, target.head):
                continue
            ok, marks = extends(session, target, seen)
            if not ok:
                withheld.append({"chain": target.kind, "counter_key": target.counter_key,
                                 "length": target.length})
                continue
            for length, head in [*marks, (target.length, target.head)]:
                leaves.append(Leaf(len(hashes) + len(leaves), target.kind, target.counter_key,
                                   length, head))
        backfills = list(session.scalars(select(ChainBackfill).where(
            ChainBackfill.checkpoint_id.is_(None)).order_by(ChainBackfill.id)))
        if previous is not None and not leaves and not withheld and not backfills:
            return None
        note: dict = {"leaves_added": len(leaves)}
        if backfills:
            note["backfilled"] = [
                {"at": iso(b.created_at), "ledger_rows": int(b.ledger_rows),
                 "audit_rows": int(b.audit_rows), "chains": int(b.chains),
                 "statement": "these rows were written before docnum kept hash chains; their "
                              "chains were computed when the database was migrated"}
                for b in backfills]
        if withheld:
            note["withheld"] = withheld
            log.error("checkpoint: %d chains do not extend their recorded heads and were left "
                      "out: %s", len(withheld), withheld[:5])
        new_hashes = [merkle.leaf_hash(leaf.encoding()) for leaf in leaves]
        tree_size = len(hashes) + len(leaves)
        body = {"checkpoint": (int(previous.id) + 1) if previous else 1, "tree_size": tree_size,
                "root_hash": merkle.root(hashes + new_hashes).hex(),
                "created_at": iso(now_db), "key_id": key_id(public), "note": note}
        row = Checkpoint(id=body["checkpoint"], tree_size=tree_size,
                         root_hash=bytes.fromhex(body["root_hash"]), created_at=now_db,
                         key_id=body["key_id"], note=note,
                         signature=key.sign(signed_body(body)))
        session.add(row)
        session.flush()
        if leaves:
            session.execute(CheckpointLeaf.__table__.insert(), [
                {"leaf_index": leaf.index, "checkpoint_id": row.id, "kind": leaf.kind,
                 "counter_key": leaf.counter_key, "length": leaf.length, "head": leaf.head,
                 "leaf_hash": digest} for leaf, digest in zip(leaves, new_hashes, strict=True)])
        for backfill in backfills:
            backfill.checkpoint_id = row.id
        return checkpoint_dict(row)


def run_checkpoint(engine: Engine, settings: Settings, clock: Clock) -> dict:
    """The beat job's body: one checkpoint, or why none was made."""
    try:
        key = load_signing_key(settings)
    except SigningKeyMissing as exc:
        log.error("checkpoint: %s", exc)
        return {"skipped": str(exc)}
    try:
        made = make_checkpoint(engine, key, clock)
    except CheckpointRefused as exc:
        log.error("checkpoint refused: %s", exc)
        return {"refused": str(exc)}
    if made is None:
        return {"unchanged": True}
    log.info("checkpoint %d: %d leaves, root %s", made["checkpoint"], made["tree_size"],
             made["root_hash"])
    return {"checkpoint": made["checkpoint"], "tree_size": made["tree_size"],
            "withheld": len(made["note"].get("withheld", []))}


__all__ = ["CheckpointRefused", "Leaf", "SPAN", "SigningKeyMissing", "check_signature",
           "checkpoint_dict", "consistency", "iter_leaves", "key_id", "latest",
           "leaf_hashes", "list_checkpoints", "load_public_key", "load_signing_key",
           "make_checkpoint", "public_key_document", "run_checkpoint", "signed_body",
           "verify_consistency"]
