"""Merkle trees as RFC 9162 §2.1 defines them: tree hashes, inclusion and consistency proofs.

``leaf = SHA-256(0x00 ‖ data)``, ``node = SHA-256(0x01 ‖ left ‖ right)``; a tree of ``n`` leaves
splits at the largest power of two below ``n``. Written here rather than taken from a library:
the few Python packages for it are small and little kept, the algorithms are a page of the
RFC, and the tests check them against the RFC 6962/9162 vectors of transparency-dev/merkle.

Proof generation works on a list of leaf hashes; verification needs only the proof.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not verify (or cannot be made for the sizes asked)."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes], start: int = 0, end: int | None = None) -> bytes:
    """MTH of ``leaves[start:end]`` (leaf hashes), built up with a ``CompactRange``."""
    tree = CompactRange()
    for i in range(start, len(leaves) if end is None else end):
        tree.append(leaves[i])
    return tree.root()


class CompactRange:
    """The right edge of a growing tree: append leaf hashes one by one, ask the root at any
    size. O(log n) memory; ``docnum verify`` recomputes every checkpoint's root with it in one
    pass over the log.

    Iterative: a stack of perfect subtrees, merged as they complete, then folded from the right
    (the same tree as the RFC's recursion)."""

    def __init__(self) -> None:
        self._stack: list[tuple[bytes, int]] = []
        self.size = 0

    def append(self, leaf: bytes) -> None:
        value, size = leaf, 1
        while self._stack and self._stack[-1][1] == size:
            value, size = node_hash(self._stack.pop()[0], value), size * 2
        self._stack.append((value, size))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        value = self._stack[-1][0]
        for left, _ in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1."""
    size = len(leaves) if size is None else size
    if not 0 <= index < size <= len(leaves):
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            path.append(root(leaves, start + k, end))
            end = start + k
        else:
            path.append(root(leaves, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(leaves: Sequence[bytes], first: int, second: int | None = None
                      ) -> list[bytes]:
    """PROOF(first, D[second]) of RFC 9162 §2.1.4.1."""
    second = len(leaves) if second is None else second
    if not 0 <= first <= second <= len(leaves):
        raise ProofError(f"no consistency proof from {first} to {second} leaves")
    if first == 0 or first == second:
        return []
    return _subproof(leaves, first, 0, second, True)


def _subproof(leaves: Sequence[bytes], m: int, start: int, end: int, whole: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if whole else [root(leaves, start, end)]
    k = _split(n)
    if m <= k:
        return _subproof(leaves, m, start, start + k, whole) + [root(leaves, start + k, end)]
    return _subproof(leaves, m - k, start + k, end, False) + [root(leaves, start, start + k)]


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root the path leads to (ProofError when it cannot fit)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    fn, sn, value = index, size - 1, leaf
    for sibling in path:
        _check(sibling)
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            value = node_hash(value, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    return value


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes],
                     expected_root: bytes) -> None:
    if root_from_inclusion(index, size, leaf, path) != expected_root:
        raise ProofError(f"leaf {index} is not in the tree of {size} leaves with this root")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: the tree of ``second`` leaves extends the tree of ``first``."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency from {first} to {second} leaves")
    if first == second:
        if proof or first_root != second_root:
            raise ProofError("equal sizes need equal roots and an empty proof")
        return
    if first == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    for item in proof:
        _check(item)
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != first_root:
        raise ProofError(f"the proof does not lead to the root of the first {first} leaves")
    if sr != second_root:
        raise ProofError(f"the proof does not lead to the root of the {second} leaves")


def _check(item: bytes) -> None:
    if len(item) != 32:
        raise ProofError("a proof hash must be 32 bytes")


__all__ = ["EMPTY_ROOT", "CompactRange", "ProofError", "consistency_proof", "inclusion_proof",
           "leaf_hash", "node_hash", "root", "root_from_inclusion", "verify_consistency",
           "verify_inclusion"]
