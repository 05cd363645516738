"""Ed25519 signing of audit checkpoints: the private key from the keyring, the public key published.

The keyring's `audit-signing` key holds 32 random bytes: exactly an Ed25519 private key
(RFC 8032 seed). Checkpoints are signed with it; the matching public key is written
next to the log so anyone can check a signature, while the private key never leaves
the encrypted keyring. A key is named by its fingerprint: 16 letters a-p from the
SHA-256 of the raw public key (letters only, so no id can look like a BSN).
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privacy.keys import Keyring, KeyringError

ROLE = "audit-signing"
_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


class SignerError(Exception):
    """A public key file could not be read as an Ed25519 public key."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def canonical(body: dict) -> bytes:
    """The bytes that are signed: JSON with sorted keys, no whitespace, UTF-8."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(public)).hexdigest()[:16].translate(_LETTERS)


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_pem(data: bytes, where: str = "public key") -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise SignerError(f"{where}: not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignerError(f"{where}: not an Ed25519 public key")
    return key


def public_from_raw(data: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(data)


class Signer:
    """Signs checkpoint bodies with the keyring's active audit-signing key."""

    def __init__(self, keyring: Keyring):
        if not has_signing_key(keyring):
            raise KeyringError(
                "the keyring has no active audit-signing key, and the audit log's checkpoints "
                "are signed with it: a central keyring made by `signals keys init --role "
                "central` has one"
            )
        key = keyring.active(ROLE)
        if len(key.material) != 32:
            raise KeyringError(f"audit-signing key {key.id} must hold 32 bytes (an Ed25519 seed)")
        self.key_id = key.id
        self._private = Ed25519PrivateKey.from_private_bytes(key.material)
        self.public = self._private.public_key()
        self.fingerprint = fingerprint(self.public)
        # Every audit-signing key of the keyring, retired ones too: a log whose latest
        # checkpoint was signed by none of them is not this keyring's to extend.
        self.known = {
            fingerprint(Ed25519PrivateKey.from_private_bytes(k.material).public_key())
            for k in keyring.keys
            if k.role == ROLE and len(k.material) == 32
        }

    def sign(self, body: dict) -> str:
        return b64(self._private.sign(canonical(body)))


def signature_valid(public: Ed25519PublicKey, body: dict, signature: str) -> bool:
    try:
        public.verify(unb64(signature), canonical(body))
    except (InvalidSignature, ValueError):
        return False
    return True


def has_signing_key(keyring: Keyring) -> bool:
    return any(k.role == ROLE and not k.retired for k in keyring.keys)
