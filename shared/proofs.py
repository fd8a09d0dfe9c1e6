"""Receipts: the proof that a number is in the ledger as issued, checkable offline
(docs/verification.md#receipts).

A receipt carries the number's ledger row in its canonical encoding, the chain from that row to
the first head the log recorded at or after it (at most ``checkpoints.SPAN`` rows), that leaf's
inclusion proof in the latest checkpoint's tree, and the signed checkpoint. ``verify_receipt``
checks all of it with nothing but the receipt and the public key.
"""
from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from docnum.shared import chain, checkpoints, merkle
from docnum.shared.errors import DocnumError
from docnum.shared.ledger import one_by_number
from docnum.shared.models import CheckpointLeaf, IssuedNumber

FORMAT = "docnum-receipt/1"


def find_row(session: Session, document_number: str, project: str | None) -> IssuedNumber:
    return one_by_number(session, document_number, project, choose="add ?project=")


def number_proof(session: Session, row: IssuedNumber,
                 public: Ed25519PublicKey | None = None) -> dict:
    """The receipt of one ledger row, from the database as it is now."""
    if row.chain_pos is None or row.row_hash is None:
        raise DocnumError("CONFLICT", f"{row.document_number} has no place on a hash chain: it "
                                      "was written outside docnum; run `docnum verify`")
    position, key = int(row.chain_pos), row.counter_key
    receipt: dict = {"format": FORMAT, "document_number": row.document_number,
                     "project": row.project, "row_hash": bytes(row.row_hash).hex()}
    previous = chain.GENESIS
    if position > 1:
        before = list(checkpoints.chain_rows(session, chain.LEDGER, key, position - 2,
                                             position - 1))
        if before and before[-1][0] is not None:  # the row's hash comes first
            previous = bytes(before[-1][0])
    latest = checkpoints.latest(session)
    leaf = None
    if latest is not None:
        leaf = session.scalar(
            select(CheckpointLeaf).where(
                CheckpointLeaf.kind == chain.LEDGER,
                CheckpointLeaf.counter_key == key if key is not None
                else CheckpointLeaf.counter_key.is_(None),
                CheckpointLeaf.length >= position,
                CheckpointLeaf.leaf_index < latest.tree_size)
            .order_by(CheckpointLeaf.length).limit(1))
    upto = int(leaf.length) if leaf is not None else position
    entries = [chain.ledger_encoding.values(r[1:]).decode() for r in
               checkpoints.chain_rows(session, chain.LEDGER, key, position - 1, upto)]
    receipt["chain"] = {"chain": chain.LEDGER, "counter_key": key, "position": position,
                        "previous_hash": previous.hex(), "entries": entries}
    if leaf is None or latest is None:
        receipt["status"] = "pending"
        receipt["detail"] = "not yet in a signed checkpoint; ask again after the next one"
    else:
        size = int(latest.tree_size)
        hashes = checkpoints.leaf_hashes(session)[:size]
        receipt["status"] = "checkpointed"
        receipt["leaf"] = checkpoints.Leaf(int(leaf.leaf_index), leaf.kind, leaf.counter_key,
                                           int(leaf.length), bytes(leaf.head)).to_dict()
        receipt["inclusion_proof"] = [h.hex() for h in merkle.inclusion_proof(
            hashes, int(leaf.leaf_index), size)]
        receipt["checkpoint"] = checkpoints.checkpoint_dict(latest)
    if public is not None:
        receipt["public_key"] = checkpoints.public_key_document(public)
    return receipt


def verify_receipt(receipt: dict, public: Ed25519PublicKey | None) -> list[str]:
    """Every reason the receipt does not prove its number (empty: it does). Without a public
    key the signature is reported unchecked."""
    try:
        return _verify(receipt, public)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"not a docnum receipt ({type(exc).__name__}: {exc})"]


def _verify(receipt: dict, public: Ed25519PublicKey | None) -> list[str]:
    if receipt.get("format") != FORMAT:
        return [f"unknown receipt format {receipt.get('format')!r}"]
    proof = receipt["chain"]
    entries: list[str] = proof["entries"]
    if not entries:
        return ["the receipt's chain is empty"]
    first = json.loads(entries[0])
    problems = []
    if first.get("type") != chain.LEDGER_TYPE:
        problems.append("the first entry is not a ledger row")
    for name, want in (("document_number", receipt["document_number"]),
                       ("project", receipt["project"]), ("counter_key", proof["counter_key"]),
                       ("chain_pos", proof["position"])):
        if first.get(name) != want:
            problems.append(f"the row's {name} is {first.get(name)!r}, the receipt says {want!r}")
    digest = chain.link(bytes.fromhex(proof["previous_hash"]), entries[0].encode())
    if digest.hex() != receipt["row_hash"]:
        problems.append("the row's encoding does not hash to the receipt's row_hash: the row "
                        "was changed")
    position = proof["position"]
    for entry in entries[1:]:
        parsed = json.loads(entry)
        position += 1
        if parsed.get("chain_pos") != position or parsed.get("counter_key") != proof["counter_key"]:
            problems.append(f"entry {position} is not the next row of the chain")
        digest = chain.link(digest, entry.encode())
    if receipt.get("status") != "checkpointed":
        problems.append("not yet in a signed checkpoint: "
                        + receipt.get("detail", "no checkpoint covers this row"))
        return problems
    leaf, checkpoint = receipt["leaf"], receipt["checkpoint"]
    if (leaf["chain"], leaf["counter_key"], leaf["length"]) != (
            chain.LEDGER, proof["counter_key"], position):
        problems.append("the recorded head is not the end of the receipt's chain")
    if leaf["head"] != digest.hex():
        problems.append(f"the chain leads to {digest.hex()[:16]}…, but checkpoint "
                        f"{checkpoint['checkpoint']} recorded {leaf['head'][:16]}… at length "
                        f"{leaf['length']}")
    leaf_digest = merkle.leaf_hash(chain.leaf_encoding(
        leaf["chain"], leaf["counter_key"], leaf["length"], bytes.fromhex(leaf["head"])))
    try:
        merkle.verify_inclusion(leaf["index"], checkpoint["tree_size"], leaf_digest,
                                [bytes.fromhex(h) for h in receipt["inclusion_proof"]],
                                bytes.fromhex(checkpoint["root_hash"]))
    except merkle.ProofError as exc:
        problems.append(f"the head is not in checkpoint {checkpoint['checkpoint']}: {exc}")
    if public is None:
        problems.append("the checkpoint's signature was not checked: no public key")
    else:
        bad = checkpoints.check_signature(checkpoint, public)
        if bad:
            problems.append(bad)
    return problems


def verification_state(session: Session, row: IssuedNumber,
                       public: Ed25519PublicKey | None) -> dict:
    """What the console shows: ``verified`` (the row is as issued and its chain reaches a head
    the latest checkpoint signed), ``pending`` (as issued, no checkpoint covers it yet) or
    ``failed`` with the reasons."""
    try:
        receipt = number_proof(session, row, public)
    except DocnumError as exc:
        return {"state": "failed", "problems": [exc.detail], "checkpoint": None}
    problems = verify_receipt(receipt, public)
    pending = receipt["status"] == "pending"
    if pending:
        problems = [p for p in problems if not p.startswith("not yet in a signed checkpoint")]
    state = "failed" if problems else "pending" if pending else "verified"
    return {"state": state, "problems": problems, "row_hash": receipt["row_hash"],
            "checkpoint": None if pending else receipt["checkpoint"]["checkpoint"]}


__all__ = ["FORMAT", "find_row", "number_proof", "verification_state", "verify_receipt"]
