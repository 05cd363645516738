"""The keyring: secret keys for pseudonymisation, run data and signing, encrypted at rest.

A keyring file is JSON holding an AES-256-GCM ciphertext of the keys, under a key
derived from a passphrase with Argon2id (memory-hard, RFC 9106). Each key has an
id that travels with what it produced, so a pseudonym names the key that made it.
No function here ever prints or logs key material.

Who holds which key is part of the design (docs/privacy.md): the supplying bodies
hold the body key, the central party the domain and run-data keys, and only the
controller holds both body and domain keys. `check_custody` refuses a keyring that
does not fit the party about to use it, so a misplaced key fails loudly.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from privacy.files import written_whole

FORMAT = "signals-keyring/1"
PASSPHRASE_ENV = "SIGNALS_KEYRING_PASSPHRASE"
# RFC 9106's second recommended option (64 MiB, 3 passes); ~0.15 s here.
KDF_PARAMS = {"name": "argon2id", "iterations": 3, "lanes": 4, "memory_cost_kib": 65536}
ROLES = ("body", "domain", "audit-signing", "run-data")
PREFIXES = {"body": "b", "domain": "d", "audit-signing": "s", "run-data": "r"}
# The purpose domain of the signalling programme: its processing activity in the register.
DEFAULT_DOMAIN = "proactive-entitlement-signalling"
# What each party must hold, and must never hold (see docs/privacy.md, key custody).
CUSTODY = {
    "body": ({"body"}, {"domain", "run-data"}),
    "central": ({"domain", "run-data"}, {"body"}),
    # Re-identifies (body + domain), reads run outputs (run-data) and logs it (audit-signing).
    "controller": ({"body", "domain", "run-data", "audit-signing"}, set()),
}


class KeyringError(Exception):
    """The keyring is missing, damaged, or the passphrase is wrong."""


@dataclass(frozen=True)
class Key:
    """One secret key; `role` says what it is for, `domain` the purpose domain if any."""

    id: str
    role: str
    material: bytes = field(repr=False)
    created: str = ""
    domain: str | None = None
    retired: bool = False

    @property
    def fingerprint(self) -> str:
        """A short one-way tag of the material: custodians compare keys without showing them."""
        h = hmac.HMAC(self.material, hashes.SHA256())
        h.update(b"signals-key-fingerprint/1")
        return h.finalize()[:6].hex()

    def public_view(self) -> dict:
        """Everything about the key except its material."""
        return {
            "id": self.id,
            "role": self.role,
            "domain": self.domain,
            "created": self.created,
            "retired": self.retired,
            "fingerprint": self.fingerprint,
        }


@dataclass
class Keyring:
    keys: list[Key] = field(default_factory=list)

    def active(self, role: str, domain: str | None = None) -> Key:
        """The newest non-retired key of a role (and domain)."""
        matching = [k for k in self.keys if k.role == role and k.domain == domain and not k.retired]
        if not matching:
            where = f" for domain {domain!r}" if domain else ""
            raise KeyringError(f"keyring has no active {role!r} key{where}")
        return matching[-1]

    def by_id(self, key_id: str) -> Key:
        for k in self.keys:
            if k.id == key_id:
                return k
        raise KeyringError(f"keyring has no key with id {key_id!r}")

    def roles(self) -> set[str]:
        return {k.role for k in self.keys}

    def add(self, role: str, domain: str | None = None, material: bytes | None = None) -> Key:
        if role not in ROLES:
            raise KeyringError(f"key role must be one of {', '.join(ROLES)}, not {role!r}")
        if (role == "domain") != (domain is not None):
            raise KeyringError("a domain key needs a purpose domain, and only a domain key has one")
        # Numbered per role across domains, so an id names one key in the whole keyring.
        prefix = PREFIXES[role]
        taken = [int(k.id[len(prefix) :]) for k in self.keys if k.role == role]
        key = Key(
            id=f"{prefix}{max(taken, default=0) + 1}",
            role=role,
            material=material if material is not None else secrets.token_bytes(32),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            domain=domain,
        )
        self.keys.append(key)
        return key

    def rotate(self, role: str, domain: str | None = None) -> tuple[Key, Key]:
        """Add a new active key and retire the old one (kept: what it made stays usable)."""
        old = self.active(role, domain)
        self.keys = [replace(k, retired=True) if k.id == old.id else k for k in self.keys]
        return old, self.add(role, domain)

    def merge(self, other: Keyring) -> list[Key]:
        """Copy the keys of another keyring in (the controller's ring); returns those added."""
        added = []
        for key in other.keys:
            mine = next((k for k in self.keys if k.id == key.id), None)
            if mine is None:
                self.keys.append(key)
                added.append(key)
            elif mine.material != key.material:
                raise KeyringError(
                    f"two different keys share the id {key.id!r} (fingerprints "
                    f"{mine.fingerprint} and {key.fingerprint}); keep their keyrings apart"
                )
        return added


def check_custody(ring: Keyring, party: str, where: Path | str = "keyring") -> None:
    """Refuse a keyring that lacks a key the party needs, or holds one it must never hold."""
    needs, forbidden = CUSTODY[party]
    held = ring.roles()
    if held & forbidden:
        raise KeyringError(
            f"{where}: a {party} keyring must not hold any {' or '.join(sorted(held & forbidden))} "
            "key (key custody, docs/privacy.md)"
        )
    if needs - held:
        lacking = " or ".join(sorted(needs - held))
        raise KeyringError(
            f"{where}: not a {party} keyring (it holds no {lacking} key): give the "
            f"{party}'s keyring, or create one with `signals keys init --role {party}`"
        )


def central_keyring(key_file: str | Path | None, domain: str) -> Keyring:
    """The central run's keyring: domain and run-data keys, and never a body key."""
    if not key_file:
        raise KeyringError(
            "the central run needs the central keyring (--key-file): its domain key makes the "
            "purpose-domain pseudonyms and its run-data key protects the outputs"
        )
    ring = load_keyring(Path(key_file), passphrase_from_env())
    check_custody(ring, "central", key_file)
    ring.active("domain", domain)
    return ring


def passphrase_from_env() -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if not value:
        raise KeyringError(  # not every command takes --passphrase-file: `run` reads the config
            f"no passphrase to unlock the keyring: set {PASSPHRASE_ENV}, or name a file that "
            "holds it (keys.passphrase_file in signals.toml; --passphrase-file where a command "
            "takes it)"
        )
    return value


def _kdf(passphrase: str, salt: bytes, params: dict) -> bytes:
    return Argon2id(
        salt=salt,
        length=32,
        iterations=params["iterations"],
        lanes=params["lanes"],
        memory_cost=params["memory_cost_kib"],
    ).derive(passphrase.encode("utf-8"))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _stored(key: Key) -> dict:
    view = key.public_view()
    del view["fingerprint"]  # derived from the material on load
    return view


def save_keyring(keyring: Keyring, path: Path, passphrase: str) -> None:
    """Encrypt and write the keyring atomically (a crash leaves the old file intact)."""
    if len(passphrase) < 8:
        raise KeyringError("the keyring passphrase must be at least 8 characters")
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    kdf = dict(KDF_PARAMS, salt=_b64(salt))
    header = {"format": FORMAT, "kdf": kdf, "cipher": "AES-256-GCM", "nonce": _b64(nonce)}
    plain = json.dumps(
        {"keys": [dict(_stored(k), material=_b64(k.material)) for k in keyring.keys]},
        sort_keys=True,
    ).encode()
    aad = json.dumps(header, sort_keys=True).encode()
    ciphertext = AESGCM(_kdf(passphrase, salt, kdf)).encrypt(nonce, plain, aad)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path, private=True, durable=True) as tmp:
        tmp.write_text(json.dumps(dict(header, ciphertext=_b64(ciphertext)), indent=1))


def load_keyring(path: Path, passphrase: str) -> Keyring:
    """Decrypt a keyring file; a wrong passphrase or any change to the file is an error."""
    path = Path(path)
    if not path.is_file():
        raise KeyringError(f"{path}: keyring file not found (create one with `signals keys init`)")
    try:
        doc = json.loads(path.read_text())
        header = {k: doc[k] for k in ("format", "kdf", "cipher", "nonce")}
        if header["format"] != FORMAT:
            raise KeyringError(f"{path}: not a keyring of format {FORMAT}")
        kdf = header["kdf"]
        key = _kdf(passphrase, base64.b64decode(kdf["salt"]), kdf)
        aad = json.dumps(header, sort_keys=True).encode()
        plain = AESGCM(key).decrypt(
            base64.b64decode(header["nonce"]), base64.b64decode(doc["ciphertext"]), aad
        )
    except InvalidTag:
        raise KeyringError(
            f"{path}: cannot decrypt the keyring: wrong passphrase, or the file was altered"
        ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise KeyringError(f"{path}: keyring file is damaged ({type(e).__name__}: {e})") from None
    keys = [
        Key(
            id=k["id"],
            role=k["role"],
            material=base64.b64decode(k["material"]),
            created=k.get("created", ""),
            domain=k.get("domain"),
            retired=k.get("retired", False),
        )
        for k in json.loads(plain)["keys"]
    ]
    return Keyring(keys)
