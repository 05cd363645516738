"""RFC 6962 Merkle tree hashing: leaf and node hashes, tree heads, inclusion and consistency proofs.

The hashes are those of Certificate Transparency (RFC 6962 section 2.1, RFC 9162 section 2.1):

    leaf hash  = SHA-256(0x00 || leaf bytes)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256()  (the empty string)
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two below n

The distinct prefixes keep a leaf from ever being taken for an inner node (second
pre-image attacks). The RFC's recursive tree equals the tree built level by level
where an unpaired last node is carried up unchanged: node i at level h is
MTH(D[i*2^h : min((i+1)*2^h, n)]). We build it that way, one level at a time, each
level hashed in one call on a contiguous byte string (privacy/audit/sha256.py).

Trees grow by appending. A `Tree` holds only what an append needs: the *frontier* of
the old tree (its perfect subtrees, one per set bit of the old size, at most 64
hashes) and the new leaves. That is enough for the new root, the consistency proof
from the old size and inclusion proofs of the new leaves, so appending a run costs
the size of the run, not the size of the whole log.

Proof verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 to the letter, so an
outsider's implementation of that RFC accepts our proofs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from privacy.audit import sha256

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(Exception):
    """A proof was asked for that the tree cannot give (index or sizes out of range)."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def hash_level(level: bytes) -> bytes:
    """The next level up: each pair of 32-byte hashes becomes one node; an odd last is carried."""
    count = len(level) // HASH_SIZE
    paired = (count - count % 2) * HASH_SIZE
    out = sha256.chunks(memoryview(level)[:paired], 2 * HASH_SIZE, NODE_PREFIX)
    if count % 2:
        out += level[-HASH_SIZE:]
    return out


def _split(n: int) -> int:
    """The largest power of two strictly below n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def frontier_root(frontier: dict[int, bytes]) -> bytes:
    """The root of a tree from its frontier (perfect subtrees by level), smallest folded first."""
    if not frontier:
        return EMPTY_ROOT
    acc = None
    for level in sorted(frontier):
        acc = frontier[level] if acc is None else node_hash(frontier[level], acc)
    return acc


def frontier_levels(size: int) -> list[int]:
    """Levels of the frontier of a tree of `size` leaves (the set bits of size), highest first."""
    return [h for h in range(size.bit_length() - 1, -1, -1) if size >> h & 1]


class Tree:
    """A Merkle tree of `size` leaves, of which the first `old_size` are known by their frontier.

    Built from all new leaf hashes at once, it holds every node: levels[h] is (start,
    hashes), the nodes of level h from index `start` to the end, concatenated. Every
    node that involves a new leaf is there, and so is every frontier node of the old
    tree (at index start when start was odd). Built by `TreeStream`, it holds only the
    nodes next to the old tree and at the right edge of every level, enough for the
    root, the frontier and the consistency proof, and the nodes of the inclusion proofs
    the stream was asked for (`proofs_for`); no other inclusion proof.
    """

    def __init__(self, old_size: int, old_frontier: dict[int, bytes], new_leaves: bytes):
        if len(new_leaves) % HASH_SIZE:
            raise ValueError("leaf hashes must be a multiple of 32 bytes")
        _check_frontier(old_size, old_frontier)
        self.old_size = old_size
        self.size = old_size + len(new_leaves) // HASH_SIZE
        self.levels: list[tuple[int, bytes]] = []
        self._held: list[dict[int, bytes]] | None = None
        start, current, width, h = old_size, new_leaves, self.size, 0
        while True:
            if start % 2:
                current = old_frontier[h] + current
                start -= 1
            self.levels.append((start, current))
            if width <= 1:
                break
            current = hash_level(current)
            start, width, h = start // 2, (width + 1) // 2, h + 1
        self.height = len(self.levels) - 1

    def node(self, level: int, index: int) -> bytes:
        """Node `index` of `level`: MTH(D[index*2^level : min((index+1)*2^level, size)])."""
        if self._held is not None:
            held = self._held[level].get(index) if level < len(self._held) else None
            if held is None:
                raise ProofError(f"node {index} at level {level} is not held by this tree")
            return held
        start, hashes = self.levels[level]
        at = (index - start) * HASH_SIZE
        if at < 0 or at + HASH_SIZE > len(hashes):
            raise ProofError(f"node {index} at level {level} is not held by this tree")
        return hashes[at : at + HASH_SIZE]

    def _range(self, begin: int, end: int) -> bytes:
        """MTH(D[begin:end]) for a range that is a node of this tree (or of its old part)."""
        width = end - begin
        level = (width - 1).bit_length()
        if begin % (1 << level) == 0 and (end == self.size or width == 1 << level):
            return self.node(level, begin >> level)
        k = _split(width)  # an old right edge [begin, old_size): fold its frontier nodes
        return node_hash(self._range(begin, begin + k), self._range(begin + k, end))

    def root(self) -> bytes:
        if self.size == 0:
            return EMPTY_ROOT
        return self.node(self.height, 0)

    def frontier(self) -> dict[int, bytes]:
        """The perfect subtrees of the whole tree: what the next append starts from."""
        return {h: self.node(h, (self.size >> h) - 1) for h in frontier_levels(self.size)}

    def inclusion_proof(self, index: int) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:size]), leaf level first; only for leaves of the new part."""
        if not self.old_size <= index < self.size:
            raise ProofError(f"leaf {index} is not among leaves {self.old_size}..{self.size - 1}")
        proof, width = [], self.size
        for level in range(self.height):
            sibling = index ^ 1
            if sibling < width:
                proof.append(self.node(level, sibling))
            index, width = index >> 1, (width + 1) // 2
        return proof

    def consistency_proof(self) -> list[bytes]:
        """RFC 6962 PROOF(old_size, D[0:size]): the old tree is a prefix of this one."""
        if self.old_size == 0 or self.old_size == self.size:
            return []
        return self._subproof(self.old_size, 0, self.size, True)

    def _subproof(self, m: int, begin: int, end: int, complete: bool) -> list[bytes]:
        n = end - begin
        if m == n:
            return [] if complete else [self._range(begin, end)]
        k = _split(n)
        if m <= k:
            return self._subproof(m, begin, begin + k, complete) + [self._range(begin + k, end)]
        return self._subproof(m - k, begin + k, end, False) + [self._range(begin, begin + k)]


def _check_frontier(old_size: int, old_frontier: dict[int, bytes]) -> None:
    if set(old_frontier) != set(frontier_levels(old_size)):
        levels = frontier_levels(old_size)
        raise ValueError(f"a frontier of {old_size} leaves needs levels {levels}")


def proof_nodes_wanted(leaves: Iterable[int]) -> dict[int, set[int]]:
    """Per level, the nodes the inclusion proofs of `leaves` read: each leaf itself, then
    its sibling and the sibling of every ancestor (RFC 6962 PATH)."""
    wanted: dict[int, set[int]] = {}
    for leaf in leaves:
        wanted.setdefault(0, set()).add(leaf)
        for level in range(64):
            wanted.setdefault(level, set()).add((leaf >> level) ^ 1)
    return wanted


@dataclass(frozen=True)
class Subtrees:
    """Leaves first..first+count-1 hashed as far up as they go without their neighbours.

    `cover`: the largest perfect subtrees that lie wholly in the range, left to right,
    as (level, index, hash); together they cover the range. A `TreeStream` takes them
    instead of the leaves, so the hashing can run in another process. They are all it
    needs for the root, frontier and consistency proof: a node of their paths that lies
    wholly in the range has its parent reaching outside, so it is one of them. An
    inclusion proof also reads nodes inside a cover subtree: `proof_nodes` holds those
    of the leaves `proofs_for` (which may lie outside the range: a proof reads nodes far
    from its leaf).
    """

    first: int
    count: int
    cover: list[tuple[int, int, bytes]]
    # The nodes wholly in the range that inclusion proofs of `proofs_for` read: (level, index).
    proofs_for: frozenset[int] = frozenset()
    proof_nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)


def subtrees(leaves: bytes, first: int, proofs_for: Iterable[int] = ()) -> Subtrees:
    """The `Subtrees` of leaf hashes numbered from `first` (every node wholly among them),
    with the nodes among them that the inclusion proofs of the leaves `proofs_for` read."""
    if len(leaves) % HASH_SIZE:
        raise ValueError("leaf hashes must be a multiple of 32 bytes")
    proofs_for = frozenset(proofs_for)
    wanted = proof_nodes_wanted(proofs_for)
    found: dict[tuple[int, int], bytes] = {}
    left, right = [], []
    level, start, nodes = 0, first, leaves
    while nodes:
        end = start + len(nodes) // HASH_SIZE
        for index in wanted.get(level, ()):
            if start <= index < end:
                at = (index - start) * HASH_SIZE
                found[(level, index)] = nodes[at : at + HASH_SIZE]
        if start % 2:  # its left sibling is outside the range: this node stays a subtree
            left.append((level, start, nodes[:HASH_SIZE]))
        if end % 2:  # likewise the last node's right sibling
            right.append((level, end - 1, nodes[-HASH_SIZE:]))
        lo, hi = start + start % 2, end - end % 2  # the nodes that pair up within the range
        if hi <= lo:
            break
        nodes = hash_level(nodes[(lo - start) * HASH_SIZE : (hi - start) * HASH_SIZE])
        level, start = level + 1, lo // 2
    return Subtrees(first, len(leaves) // HASH_SIZE, left + right[::-1], proofs_for, found)


class TreeStream:
    """Builds a `Tree` from leaf hashes that arrive a chunk at a time, in bounded memory.

    Every level is hashed as its nodes arrive: a node waits only for its right sibling,
    so at most one node per level is pending. Of each level only the first EDGE nodes
    (next to the old tree: the consistency proof) and the last EDGE (the right edge:
    frontier, root) are kept, and the nodes that the inclusion proofs of the leaves in
    `proofs_for` need. A log append of 60 M records then needs a few kB for its tree
    instead of ~4 GB; its leaf hashes are in the segment for whoever needs proofs.
    """

    EDGE = 4

    def __init__(
        self, old_size: int, old_frontier: dict[int, bytes], proofs_for: Iterable[int] = ()
    ):
        _check_frontier(old_size, old_frontier)
        self.old_size, self.size = old_size, old_size
        self._pending: dict[int, tuple[int, bytes]] = {}
        self._first: list[dict[int, bytes]] = []
        self._last: list[dict[int, bytes]] = []
        self._proofs_for = frozenset(proofs_for)
        self._wanted = proof_nodes_wanted(self._proofs_for)
        self._proof_nodes: dict[int, dict[int, bytes]] = {}
        for h, node in old_frontier.items():
            index = (old_size >> h) - 1  # even: the old tree's perfect subtree at this level
            self._pending[h] = (index, node)
            self._keep(h, index, node)

    def add(self, leaves: bytes) -> None:
        """The next leaf hashes (32 bytes each, concatenated), in log order."""
        if len(leaves) % HASH_SIZE:
            raise ValueError("leaf hashes must be a multiple of 32 bytes")
        if leaves:
            first, self.size = self.size, self.size + len(leaves) // HASH_SIZE
            self._feed(0, first, leaves)

    def add_subtrees(self, part: Subtrees) -> None:
        """The next leaves, already hashed into subtrees elsewhere (`subtrees`, given the
        same `proofs_for` as this stream when it is to give inclusion proofs)."""
        if part.first != self.size:
            raise ValueError(f"subtrees from leaf {part.first} given at leaf {self.size}")
        # A proof's nodes may lie in any part of the range: every part must have looked.
        if not self._proofs_for <= part.proofs_for:
            missing = sorted(self._proofs_for - part.proofs_for)
            raise ValueError(f"subtrees from leaf {part.first} lack the proof nodes of {missing}")
        for (level, index), node in part.proof_nodes.items():
            self._proof_nodes.setdefault(level, {})[index] = node
        self.size += part.count
        for level, index, node in part.cover:  # left to right: as if fed leaf by leaf
            self._feed(level, index, node)

    def _keep(self, level: int, index: int, node: bytes) -> None:
        while len(self._first) <= level:
            self._first.append({})
            self._last.append({})
        first, last = self._first[level], self._last[level]
        if len(first) < self.EDGE or index in first:
            first[index] = node
            return
        last[index] = node
        if len(last) > self.EDGE:
            del last[min(last)]

    def _feed(self, level: int, first: int, nodes: bytes) -> None:
        count = len(nodes) // HASH_SIZE
        for i in [*range(min(count, self.EDGE)), *range(max(self.EDGE, count - self.EDGE), count)]:
            self._keep(level, first + i, nodes[i * HASH_SIZE : (i + 1) * HASH_SIZE])
        for index in self._wanted.get(level, ()):
            if first <= index < first + count:
                at = (index - first) * HASH_SIZE
                self._proof_nodes.setdefault(level, {})[index] = nodes[at : at + HASH_SIZE]
        if level in self._pending:
            index, node = self._pending.pop(level)
            if index != first - 1:
                raise AssertionError(f"level {level}: node {first} arrived after node {index}")
            first, nodes, count = index, node + nodes, count + 1
        if count % 2:
            self._pending[level] = (first + count - 1, nodes[-HASH_SIZE:])
            nodes, count = nodes[:-HASH_SIZE], count - 1
        if count:
            self._feed(level + 1, first // 2, hash_level(nodes))

    def finish(self) -> Tree:
        """The tree of all leaves added: root, frontier, consistency proof, and the inclusion
        proofs of the leaves in `proofs_for`."""
        level, width = 0, self.size
        while width > 1:
            if level in self._pending:  # an unpaired last node is carried up unchanged
                index, node = self._pending.pop(level)
                self._feed(level + 1, index // 2, node)
            level, width = level + 1, (width + 1) // 2
        tree = Tree.__new__(Tree)
        tree.old_size, tree.size, tree.height, tree.levels = self.old_size, self.size, level, []
        tree._held = [
            {**a, **b, **self._proof_nodes.get(h, {})}
            for h, (a, b) in enumerate(zip(self._first, self._last, strict=True))
        ]
        return tree


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Iterable[bytes], root: bytes):
    """RFC 9162 2.1.3.2: True when `leaf` (a leaf hash) is leaf `index` of the tree `root`."""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: True when the tree (second, second_root) extends (first, first_root)."""
    if first > second or first < 0:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof  # every tree extends the empty tree
    path = list(proof)
    if not path:
        return False
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0
