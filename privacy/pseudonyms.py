"""Keyed pseudonyms in two layers: a body layer (HMAC-SHA256) and a purpose-domain layer (AES).

A pseudonym looks like `b1.kdjhfbeanmopcaegkdjhfbeanmopcaeg`: the key id, a dot, and
16 bytes written with the letters a-p (one per 4 bits). Letters only, so a pseudonym
can never be mistaken for (or scanned as) a BSN.

Layer 1, at the supplying body: HMAC-SHA256(body key, kind || 0 || value), cut to 16
bytes -> `b1.<letters>`. The identifier kind is part of the input, so a BSN and an
address id never share a pseudonym. Without the body key nobody can test a guessed
BSN against it, which is what stops the central party brute-forcing the ~10^8 BSNs.

Layer 2, when the central run reads a delivery: AES-256 of those 16 bytes under the
key of one purpose domain -> `d1.<letters>`. AES on a single block is a keyed
permutation: the same body pseudonym always gives the same domain pseudonym (joins
work), a body without the domain key cannot recognise its records, domains with
different keys do not link, and whoever holds two domain keys of one domain can
re-key a pseudonym from the old key to the new exactly (rotation keeps links, see
`translate`). Inverting layer 2 yields a body pseudonym, never a BSN.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privacy.keys import (
    PASSPHRASE_ENV,
    Key,
    Keyring,
    KeyringError,
    load_keyring,
    passphrase_from_env,
)

_HEX_TO_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
PSEUDONYM = re.compile(r"^[a-z][a-z0-9-]*\.[a-p]{32}$")
PSEUDONYM_PATTERN = r"^[a-z][a-z0-9-]*\.[a-p]{32}$"
# Layer-1 pseudonyms are made by body keys (`b<n>`), layer-2 ones by domain keys (`d<n>`).
BODY_PSEUDONYM_PATTERN = r"^b[0-9]+\.[a-p]{32}$"
DOMAIN_PSEUDONYM_PATTERN = r"^d[0-9]+\.[a-p]{32}$"


class Pseudonymiser:
    """Layer 1: makes body pseudonyms with one key; vectorised over Arrow arrays."""

    def __init__(self, key: Key):
        if key.role != "body":
            raise KeyringError(f"key {key.id} is a {key.role} key; layer 1 needs a body key")
        self.key_id = key.id
        self._base = hmac.HMAC(key.material, hashes.SHA256())

    def one(self, kind: str, value: str) -> str:
        h = self._base.copy()
        h.update(kind.encode() + b"\x00" + value.encode())
        return self.key_id + "." + h.finalize()[:16].hex().translate(_HEX_TO_LETTERS)

    def array(self, kind: str, values: pa.Array) -> pa.Array:
        """Pseudonymise an array; nulls stay null. Each distinct value is hashed once."""
        encoded = _dictionary(values)
        # A per-value loop over the dictionary: HMAC has no vectorised form (~1 us a value).
        mapped = pa.array([self.one(kind, v) for v in encoded.dictionary.to_pylist()], pa.string())
        return mapped.take(encoded.indices)


def _dictionary(values: pa.Array) -> pa.DictionaryArray:
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded


def _letters_to_blocks(values: pa.Array) -> np.ndarray:
    """The 16-byte blocks behind pseudonyms (non-null, well-formed), concatenated."""
    return _blocks(_tail_nibbles(values))


def _tail_nibbles(values: pa.Array) -> np.ndarray:
    """Each value's last 32 bytes less ord('a'): (n, 32) uint8, a letter a-p giving 0-15.

    Every value must have 32 bytes or more (a null gives any 32). Bytes, not characters:
    a well-formed pseudonym is ASCII, and slicing bytes skips decoding UTF-8.
    """
    tails = pc.binary_slice(values.cast(pa.binary()), -32).cast(pa.binary(32))
    start = tails.offset * 32
    raw = np.frombuffer(tails.buffers()[1], dtype=np.uint8)[start : start + 32 * len(values)]
    return raw.reshape(-1, 32) - ord("a")


def _blocks(nibbles: np.ndarray) -> np.ndarray:
    """The 16-byte blocks of _tail_nibbles, a byte from each two nibbles (high first)."""
    pairs = nibbles.view("<u2")  # a pair as one number: its first nibble in the low byte
    return ((pairs << 4) | (pairs >> 8)).astype(np.uint8)  # the low byte is the block's


def _all_letters(nibbles: np.ndarray) -> np.ndarray:
    """Whether each row of _tail_nibbles is 32 letters a-p: no nibble over 15.

    Eight nibbles to a 64-bit word, their high bits all clear (an `all` over the 32
    bytes took ~28 ms per million rows, this ~5)."""
    words = nibbles.view(np.uint64)
    high = words[:, 0] | words[:, 1] | words[:, 2] | words[:, 3]
    return (high & np.uint64(0xF0F0F0F0F0F0F0F0)) == 0


_BODY_HEAD = re.compile(r"b[0-9]+\.")  # what comes before a body pseudonym's 32 letters
_PLACEHOLDER = "b0." + "a" * 32  # stands in for a value that is not one, to keep positions


def _body_nibbles(values: pa.Array) -> tuple[pa.BooleanArray, np.ndarray]:
    """Which values are body pseudonyms (BODY_PSEUDONYM_PATTERN; null where the value is
    null), and every value's _tail_nibbles (any 32 where it is not one).

    The pattern is checked byte by byte, which is the same check: every character it
    allows is ASCII. The head (`b<n>.`) once for each distinct one (a delivery has one
    or two: its body's key ids), the letters in numpy on the nibbles the blocks are made
    of anyway. The regular expression took ~90 ms per million values, for the 6 M
    identifiers of a 1M-person run ~0.5 s; this takes ~35 ms per million.
    """
    binary = values.cast(pa.binary())
    heads = pc.binary_slice(binary, 0, -32).dictionary_encode()
    good = [
        h is not None and _BODY_HEAD.fullmatch(h.decode("latin-1")) is not None
        for h in heads.dictionary.to_pylist()
    ]
    long_enough = pc.greater_equal(pc.binary_length(binary), 35)
    shaped = pc.and_kleene(long_enough, pa.array(good, pa.bool_()).take(heads.indices))
    whole = pc.all(shaped).as_py() and not shaped.null_count  # all() skips nulls
    filled = values if whole else pc.if_else(shaped, values, _PLACEHOLDER)
    nibbles = _tail_nibbles(filled)
    letters = _all_letters(nibbles)
    if values.null_count:  # a null stays null, not a value that fails
        letters |= ~values.is_valid().to_numpy(zero_copy_only=False)
    return pc.and_kleene(shaped, pa.array(letters)), nibbles


# Each byte value as the two letters that write it (high nibble first), one 16-bit number.
_LETTER_PAIRS = np.array([(97 + (b >> 4)) | ((97 + (b & 15)) << 8) for b in range(256)], "<u2")


def _blocks_to_pseudonyms(key_id: str, blocks: bytes) -> pa.Array:
    """`<key_id>.<32 letters>` for each 16-byte block: written into one buffer in numpy,
    then taken as an Arrow string array as it is (~40 ms per million, half the cost of
    joining the prefix to the letters in Arrow)."""
    raw = np.frombuffer(blocks, dtype=np.uint8)
    n, prefix = len(raw) // 16, f"{key_id}.".encode()
    width = len(prefix) + 32
    if (n + 1) * width >= 2**31:  # the offsets are 32-bit
        raise ValueError(f"{n:,} pseudonyms are too many for one array; pass fewer at a time")
    out = np.empty((n, width), np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix, np.uint8)
    out[:, len(prefix) :] = _LETTER_PAIRS[raw].view(np.uint8).reshape(n, 32)
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out))


class DomainPseudonymiser:
    """Layer 2: body pseudonym -> domain pseudonym, AES-256 over each 16-byte block.

    Vectorised: the values of an array are encrypted in one call (ECB over
    independent single blocks is exactly the keyed permutation wanted here; no block
    ever depends on another).

    A Beam DoFn holding it is pickled into the job. Made with `from_keyring_file`, it
    pickles without its key: wherever it is unpickled (a cluster's worker) it opens the
    keyring file again, with the passphrase in that process's environment, so the key
    never travels with the job (to a scheduler, a staging bucket). Made from a key alone,
    it pickles with the key: for tests and the bench, whose keys are throwaway.
    """

    def __init__(self, key: Key, keyring_file: str | None = None):
        if key.role != "domain":
            raise KeyringError(f"key {key.id} is a {key.role} key; layer 2 needs a domain key")
        self.key_id, self.domain = key.id, key.domain
        self.keyring_file = keyring_file
        self.fingerprint = key.fingerprint  # a one-way tag: the very key, wherever reopened
        self._material: bytes | None = key.material

    @classmethod
    def from_keyring_file(cls, key_file, keyring: Keyring, domain: str) -> DomainPseudonymiser:
        """The domain's active key of `keyring`, read from `key_file` (the same keyring).

        The path is made absolute but not resolved: a symlink (a mounted secret volume) is
        the path the workers share, its target may not be.
        """
        return cls(keyring.active("domain", domain), keyring_file=os.path.abspath(key_file))

    def __repr__(self) -> str:
        return f"DomainPseudonymiser(key_id={self.key_id!r}, domain={self.domain!r})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.keyring_file:
            state["_material"] = None  # opened again where unpickled
        return state

    def _cipher(self) -> Cipher:
        if self._material is None:
            self._material = _key_from_file(
                self.keyring_file, self.key_id, self.domain, self.fingerprint
            )
        return Cipher(algorithms.AES(self._material), modes.ECB())

    def array(self, values: pa.Array) -> pa.Array:
        """Domain pseudonyms for an array of body pseudonyms; nulls stay null.

        Raises TypeError for anything but body pseudonyms: this is the privacy boundary,
        so a raw identifier or an already-domain pseudonym never passes silently.
        Every value is encrypted, repeats too: AES of 16 bytes costs less than finding the
        distinct values first (the identifiers of a 1M-person run, 6.0 M values: 1.67-2.28 s
        with the distinct values found first, 1.15-1.54 s without).
        """
        out, malformed = self.array_or_malformed(values)
        if pc.any(malformed).as_py():
            raise TypeError("the domain layer accepts only body pseudonyms (b<n>.<32 letters>)")
        return out

    def array_or_malformed(self, values: pa.Array) -> tuple[pa.Array, pa.BooleanArray]:
        """Domain pseudonyms for the body pseudonyms in `values`, and a mask of the values
        that are not body pseudonyms (null in the first array, never passed on).

        For a reader that quarantines such rows: the pattern is checked once a value,
        here, not once there and again here (0.5 s of matching for the 6 M identifiers of
        a 1M-person run).
        """
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if values.null_count == len(values):
            return pa.nulls(len(values), pa.string()), pa.repeat(pa.scalar(False), len(values))
        shaped, nibbles = _body_nibbles(values)
        malformed = pc.fill_null(pc.invert(shaped), False)
        usable = pc.and_kleene(shaped, pc.is_valid(values))  # a null stays null
        wellformed = pc.all(usable).as_py()
        # A value that is not a pseudonym is encrypted as whatever its nibbles are and
        # dropped below: never passed on.
        blocks = self._cipher().encryptor().update(_blocks(nibbles))
        out = _blocks_to_pseudonyms(self.key_id, blocks)
        if not wellformed:
            out = pc.if_else(usable, out, pa.scalar(None, pa.string()))
        return out, malformed

    def one(self, body_pseudonym: str) -> str:
        return self.array(pa.array([body_pseudonym], pa.string()))[0].as_py()

    def _unwrap(self, values: pa.Array) -> bytes:
        """The body-pseudonym blocks behind this key's domain pseudonyms (for re-keying)."""
        return self._cipher().decryptor().update(_letters_to_blocks(values))


class TwoLayerPseudonymiser:
    """Raw identifier -> domain pseudonym: body layer, then domain layer.

    Needs both keys, which only the controller holds (privacy/reidentify.py uses it
    to find signalled households in a raw BRP delivery, privacy/subject_access.py to
    find the pseudonyms of a person who asks, privacy/body_links.py to link households
    across a body-key rotation).
    """

    def __init__(self, body_key: Key, domain_key: Key):
        self.body, self.domain = Pseudonymiser(body_key), DomainPseudonymiser(domain_key)

    def one(self, kind: str, value: str) -> str:
        return self.domain.one(self.body.one(kind, value))

    def array(self, kind: str, values: pa.Array) -> pa.Array:
        return self.domain.array(self.body.array(kind, values))


@functools.lru_cache(maxsize=4)
def _key_from_file(path: str, key_id: str, domain: str, fingerprint: str) -> bytes:
    """A domain key's material from a keyring file (once per process: Argon2id ~0.1 s).

    It must be the key the run started with (its fingerprint): a keyring made again under
    the same path, or another copy on a worker host, can hold another key of the same id.
    """
    try:
        key = load_keyring(Path(path), passphrase_from_env()).by_id(key_id)
    except KeyringError as exc:
        raise KeyringError(
            f"a pipeline worker cannot open the central keyring for domain key {key_id}: {exc}. "
            f"On a cluster every worker needs {path} at that path and {PASSPHRASE_ENV} in "
            "its environment (docs/scaling.md)"
        ) from None
    if key.role != "domain" or key.domain != domain:
        raise KeyringError(f"{path}: key {key_id} is not a domain key of {domain!r}")
    if key.fingerprint != fingerprint:
        raise KeyringError(
            f"{path}: holds another key {key_id} (fingerprint {key.fingerprint}) than the run "
            f"started with ({fingerprint}): every worker must see the run's own keyring"
        )
    return key.material


def translate(values: pa.Array, keyring: Keyring, domain: str, to: Key | None = None) -> pa.Array:
    """Re-key domain pseudonyms made with any key of `domain` to its active key (or `to`).

    This is how links survive a rotation: a pseudonym written under the retired key
    d1 maps to exactly the pseudonym the new key d2 gives the same person. Nulls stay
    null; a pseudonym of another domain or an unknown key is an error (domains never
    link).
    """
    if to is not None and (to.role != "domain" or to.domain != domain):
        raise KeyringError(f"key {to.id} is not a key of domain {domain!r}")
    active = DomainPseudonymiser(to or keyring.active("domain", domain))
    encoded = _dictionary(values)
    distinct = encoded.dictionary
    if not len(distinct):
        return pa.nulls(len(values), pa.string())
    if not pc.all(pc.match_substring_regex(distinct, DOMAIN_PSEUDONYM_PATTERN)).as_py():
        raise TypeError("translate accepts only domain pseudonyms (d<n>.<32 letters>)")
    key_ids = pc.utf8_slice_codeunits(distinct, 0, -33)
    out = distinct
    for key_id in pc.unique(key_ids).to_pylist():
        if key_id == active.key_id:
            continue
        key = keyring.by_id(key_id)
        if key.role != "domain" or key.domain != domain:
            raise KeyringError(f"key {key_id} is not a key of domain {domain!r}")
        mask = pc.equal(key_ids, key_id)
        blocks = DomainPseudonymiser(key)._unwrap(distinct.filter(mask))
        rekeyed = _blocks_to_pseudonyms(active.key_id, active._cipher().encryptor().update(blocks))
        out = pc.replace_with_mask(out, mask, rekeyed)
    return out.take(encoded.indices)


def is_pseudonym(values: pa.Array) -> pa.Array:
    """True where a value has the form of a pseudonym (nulls give null)."""
    return pc.match_substring_regex(values, PSEUDONYM_PATTERN)
