"""RFC 9162 Merkle trees: the test vectors of transparency-dev/merkle (RFC 6962 hashing, the
same as RFC 9162 §2.1), and properties checked against the RFC's recursive definitions."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from docnum.shared import merkle

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
                                     "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]
# (leaf index, tree size, proof) and (size1, size2, proof), from the same source.
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
HASHES = [merkle.leaf_hash(data) for data in LEAVES]


def hexes(items: list[bytes]) -> list[str]:
    return [i.hex() for i in items]


# --------------------------------------------------------------- the RFC, word for word
def mth(data: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, recursively, on leaf data (the oracle for the iterative code)."""
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < len(data):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(data[:k]) + mth(data[k:])).digest()


def test_roots_of_the_vector_trees():
    assert merkle.root([]) == merkle.EMPTY_ROOT == mth([])
    for size in range(1, 9):
        assert merkle.root(HASHES[:size]) == ROOTS[size - 1] == mth(LEAVES[:size])


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_vectors(index, size, proof):
    assert hexes(merkle.inclusion_proof(HASHES, index, size)) == proof
    merkle.verify_inclusion(index, size, HASHES[index], [bytes.fromhex(p) for p in proof],
                            ROOTS[size - 1])


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_vectors(first, second, proof):
    assert hexes(merkle.consistency_proof(HASHES, first, second)) == proof
    path = [bytes.fromhex(p) for p in proof]
    merkle.verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], path)
    # The corruptions transparency-dev's verifier must reject.
    bad = [
        (first - 1, second, ROOTS[first - 1], ROOTS[second - 1], path),
        (first + 1, second, ROOTS[first - 1], ROOTS[second - 1], path),
        (first, second * 2, ROOTS[first - 1], ROOTS[second - 1], path),
        (first, second, ROOTS[second - 1], ROOTS[first - 1], path),
        (first, second, ROOTS[first - 1], ROOTS[second - 1], path[:-1]),
        (first, second, ROOTS[first - 1], ROOTS[second - 1], path + [ROOTS[0]]),
        (first, second, ROOTS[first - 1], ROOTS[second - 1], [ROOTS[0]] + path),
        (first, second, ROOTS[first - 1], ROOTS[second - 1], []),
    ]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        bad.append((first, second, ROOTS[first - 1], ROOTS[second - 1], flipped))
    for case in bad:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*case)


def test_edge_cases():
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, ROOTS[4], [])
    merkle.verify_consistency(3, 3, ROOTS[2], ROOTS[2], [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(3, 3, ROOTS[2], ROOTS[3], [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(4, 3, ROOTS[3], ROOTS[2], [])
    with pytest.raises(merkle.ProofError):
        merkle.inclusion_proof(HASHES, 8, 8)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(0, 1, HASHES[0], [ROOTS[0]], HASHES[0])
    merkle.verify_inclusion(0, 1, HASHES[0], [], HASHES[0])


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@given(leaf_lists)
def test_root_and_compact_range_match_the_rfc(data):
    hashes = [merkle.leaf_hash(d) for d in data]
    compact = merkle.CompactRange()
    for size, digest in enumerate(hashes, start=1):
        compact.append(digest)
        assert compact.root() == merkle.root(hashes[:size]) == mth(data[:size])


@given(leaf_lists, st.data())
def test_every_inclusion_proof_verifies_and_no_other_leaf_does(data, draw):
    hashes = [merkle.leaf_hash(d) for d in data]
    size = draw.draw(st.integers(1, len(hashes)))
    index = draw.draw(st.integers(0, size - 1))
    root = merkle.root(hashes, 0, size)
    path = merkle.inclusion_proof(hashes, index, size)
    merkle.verify_inclusion(index, size, hashes[index], path, root)
    forged = merkle.leaf_hash(data[index] + b"!")
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(index, size, forged, path, root)


@given(leaf_lists, st.data())
def test_every_consistency_proof_verifies_and_a_rewritten_prefix_fails(data, draw):
    hashes = [merkle.leaf_hash(d) for d in data]
    second = draw.draw(st.integers(1, len(hashes)))
    first = draw.draw(st.integers(1, second))
    roots = merkle.root(hashes, 0, first), merkle.root(hashes, 0, second)
    proof = merkle.consistency_proof(hashes, first, second)
    merkle.verify_consistency(first, second, *roots, proof)
    if first < second:
        changed = draw.draw(st.integers(0, first - 1))
        rewritten = list(hashes)
        rewritten[changed] = merkle.leaf_hash(data[changed] + b"!")
        forged = merkle.consistency_proof(rewritten, first, second)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(first, second, roots[0],
                                      merkle.root(rewritten, 0, second), forged)
