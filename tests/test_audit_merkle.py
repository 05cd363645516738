"""The Merkle tree against the RFC 6962 definitions written out recursively, for every small size.

The reference functions below are RFC 6962 section 2.1 verbatim (MTH, PATH, PROOF); the
tree under test builds level by level from a frontier. Both must give the same roots
and proofs, and the RFC 9162 verifiers must accept exactly the right proofs.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from privacy.audit import merkle


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    return subproof(m, d, True)


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:n])]
    return subproof(m - k, d[k:n], False) + [mth(d[:k])]


def data(n: int) -> list[bytes]:
    return [f"record {i}".encode() for i in range(n)]


def leaves(d: list[bytes]) -> bytes:
    return b"".join(merkle.leaf_hash(x) for x in d)


def test_the_known_answer_for_an_empty_tree_and_one_leaf():
    # RFC 6962: MTH({}) = SHA-256(); a single leaf is SHA-256(0x00 || d0).
    assert merkle.Tree(0, {}, b"").root().hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.Tree(0, {}, leaves([b""])).root().hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@pytest.mark.parametrize("n", range(1, 40))
def test_roots_and_inclusion_proofs_equal_the_rfc_definitions(n):
    d = data(n)
    tree = merkle.Tree(0, {}, leaves(d))
    assert tree.root() == mth(d)
    for i in range(n):
        p = tree.inclusion_proof(i)
        assert p == path(i, d)
        assert merkle.verify_inclusion(merkle.leaf_hash(d[i]), i, n, p, tree.root())


@pytest.mark.parametrize("old", range(0, 24))
def test_appending_from_a_frontier_gives_the_same_tree_and_consistency_proofs(old):
    for new in range(old, 34):
        d = data(new)
        before = merkle.Tree(0, {}, leaves(d[:old]))
        after = merkle.Tree(old, before.frontier(), leaves(d[old:]))
        assert after.root() == mth(d)
        assert merkle.frontier_root(after.frontier()) == mth(d)
        if 0 < old < new:
            assert after.consistency_proof() == proof(old, d)
        assert merkle.verify_consistency(old, new, mth(d[:old]), mth(d), after.consistency_proof())
        for i in range(old, new):  # the new leaves are provable from the frontier alone
            assert merkle.verify_inclusion(
                merkle.leaf_hash(d[i]), i, new, after.inclusion_proof(i), mth(d)
            )


def test_a_wrong_leaf_index_size_or_root_fails_inclusion():
    d = data(11)
    tree = merkle.Tree(0, {}, leaves(d))
    leaf, p, root = merkle.leaf_hash(d[5]), tree.inclusion_proof(5), tree.root()
    assert merkle.verify_inclusion(leaf, 5, 11, p, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(d[6]), 5, 11, p, root)
    assert not merkle.verify_inclusion(leaf, 4, 11, p, root)
    assert not merkle.verify_inclusion(leaf, 5, 6, p, root)  # a size whose path is shorter
    assert not merkle.verify_inclusion(leaf, 5, 11, p[:-1], root)
    assert not merkle.verify_inclusion(leaf, 5, 11, p, mth(d[:10]))
    assert not merkle.verify_inclusion(leaf, 11, 11, p, root)


def test_a_rewritten_history_fails_consistency():
    d = data(20)
    forged = d[:3] + [b"forged"] + d[4:]
    honest = merkle.Tree(7, merkle.Tree(0, {}, leaves(d[:7])).frontier(), leaves(d[7:]))
    rewritten = merkle.Tree(7, merkle.Tree(0, {}, leaves(forged[:7])).frontier(), leaves(d[7:]))
    old_root = mth(d[:7])
    assert merkle.verify_consistency(7, 20, old_root, honest.root(), honest.consistency_proof())
    assert not merkle.verify_consistency(
        7, 20, old_root, rewritten.root(), rewritten.consistency_proof()
    )
    assert not merkle.verify_consistency(7, 20, old_root, honest.root(), [])
    assert not merkle.verify_consistency(8, 20, old_root, honest.root(), honest.consistency_proof())


def test_a_leaf_cannot_pass_for_an_inner_node():
    # Distinct prefixes: the node over two leaves is not the leaf hash of their concatenation.
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.node_hash(a, b) != merkle.leaf_hash(a + b)


def test_the_tree_refuses_proofs_it_cannot_give():
    tree = merkle.Tree(4, merkle.Tree(0, {}, leaves(data(4))).frontier(), leaves(data(3)))
    with pytest.raises(merkle.ProofError):
        tree.inclusion_proof(1)  # an old leaf: only its frontier is held
    with pytest.raises(merkle.ProofError):
        tree.inclusion_proof(7)
    with pytest.raises(ValueError):
        merkle.Tree(5, {}, b"")  # a frontier of 5 leaves needs levels 2 and 0


def _as_leaves(stream, chunk: bytes, _first: int, _rng) -> None:
    stream.add(chunk)


def _mostly_as_subtrees(stream, chunk: bytes, first: int, rng) -> None:
    # The log append hashes each chunk's subtrees in a worker; the stream joins them.
    if rng.random() < 0.2:
        stream.add(chunk)
    else:
        stream.add_subtrees(merkle.subtrees(chunk, first))


@pytest.mark.parametrize("feed, most", [(_as_leaves, 9), (_mostly_as_subtrees, 40)])
@pytest.mark.parametrize("old", [*range(0, 24), 63, 64, 65, 1000])
def test_a_streamed_tree_gives_the_rfc_root_frontier_and_consistency_proof(old, feed, most):
    """TreeStream keeps only the edges of each level; what an append signs must not change."""
    rng = random.Random(old)
    for new in [*range(old, old + 34), old + 257, old + 1500]:
        d = data(new)
        frontier = merkle.Tree(0, {}, leaves(d[:old])).frontier()
        stream = merkle.TreeStream(old, frontier)
        added, hashes = old, leaves(d[old:])
        while added < new:  # chunks of every size, odd ones included
            chunk = hashes[(added - old) * 32 : (added - old + rng.randint(1, most)) * 32]
            feed(stream, chunk, added, rng)
            added += len(chunk) // 32
        tree = stream.finish()
        assert tree.size == new
        assert tree.root() == mth(d)
        assert merkle.frontier_root(tree.frontier()) == mth(d)
        if 0 < old < new:
            assert tree.consistency_proof() == proof(old, d)


@pytest.mark.parametrize("as_subtrees", [False, True])
@pytest.mark.parametrize("old", [0, 1, 2, 3, 5, 7, 8, 13, 64, 100])
def test_a_streamed_tree_gives_the_rfc_inclusion_proofs_of_the_leaves_asked_for(old, as_subtrees):
    """What `audit verify` and `audit prove` check without holding a segment's whole tree."""
    rng = random.Random(old)
    for new in [old + 1, old + 2, old + 3, old + 9, old + 64, old + 77, old + 1000]:
        d = data(new)
        frontier = merkle.Tree(0, {}, leaves(d[:old])).frontier()
        asked = sorted({old, new - 1, (old + new) // 2, rng.randrange(old, new)})
        stream = merkle.TreeStream(old, frontier, proofs_for=asked)
        added, hashes = old, leaves(d[old:])
        while added < new:
            chunk = hashes[(added - old) * 32 : (added - old + rng.randint(1, 40)) * 32]
            if as_subtrees:  # hashed in worker processes, each told every leaf asked for
                stream.add_subtrees(merkle.subtrees(chunk, added, proofs_for=asked))
            else:
                stream.add(chunk)
            added += len(chunk) // 32
        tree = stream.finish()
        for m in asked:
            assert tree.node(0, m) == merkle.leaf_hash(d[m])
            assert tree.inclusion_proof(m) == path(m, d), (old, new, m)
            assert merkle.verify_inclusion(tree.node(0, m), m, new, path(m, d), mth(d))


def test_a_stream_asked_for_proofs_refuses_subtrees_not_told_of_them():
    stream = merkle.TreeStream(0, {}, proofs_for=[5, 9])
    with pytest.raises(ValueError, match=r"lack the proof nodes of \[9\]"):
        stream.add_subtrees(merkle.subtrees(leaves(data(8)), 0, proofs_for=[5]))


def test_a_streamed_tree_holds_no_proof_for_a_leaf_in_the_middle():
    stream = merkle.TreeStream(0, {})
    stream.add(leaves(data(100)))
    with pytest.raises(merkle.ProofError):
        stream.finish().inclusion_proof(50)


def test_subtrees_cover_their_range_with_the_largest_perfect_subtrees():
    d = data(64)
    part = merkle.subtrees(leaves(d[3:13]), 3)
    # [3, 13) = 3 | 4..7 | 8..11 | 12: levels 0, 2, 2, 0
    assert [(level, index) for level, index, _ in part.cover] == [(0, 3), (2, 1), (2, 2), (0, 12)]
    assert [node for *_, node in part.cover] == [
        mth(d[3:4]),
        mth(d[4:8]),
        mth(d[8:12]),
        mth(d[12:13]),
    ]
    stream = merkle.TreeStream(0, {})
    with pytest.raises(ValueError, match="from leaf 3 given at leaf 0"):
        stream.add_subtrees(part)
