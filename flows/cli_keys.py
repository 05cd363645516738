"""`signals keys`: create, rotate and inspect keyrings; key material is never printed.

Three kinds of keyring follow the key custody of docs/privacy.md: `body` (the body
key, shared by the supplying bodies through the key custodian), `central` (domain
keys per purpose domain, the run-data key that protects outputs, an audit signing
key) and `controller` (a body keyring and a central keyring combined: the only
keyring that can re-identify, used by `signals worklist`). After a body-key rotation the
controller links households' old and new pseudonyms (`keys link`, privacy/body_links.py).
"""

from __future__ import annotations

from pathlib import Path

KINDS = ("body", "central", "controller")


def _passphrase(args) -> str:
    from flows.cli import _passphrase as from_args

    return from_args(args)


def cmd_keys_init(args) -> int:
    from privacy.keys import Keyring, KeyringError, check_custody, load_keyring, save_keyring

    path = Path(args.key_file)
    if path.exists() and not args.force:
        raise KeyringError(f"{path}: a keyring exists already; use --force to replace it")
    passphrase = _passphrase(args)
    ring = Keyring()
    if args.role == "body":
        ring.add("body")
    elif args.role == "central":
        for domain in args.domain or [_default_domain()]:
            ring.add("domain", domain)
        ring.add("run-data")
        ring.add("audit-signing")
    else:
        if not args.imports:
            raise KeyringError("a controller keyring is made from others: pass --import FILE")
        for other in args.imports:
            ring.merge(load_keyring(Path(other), passphrase))
    check_custody(ring, args.role, path)
    save_keyring(ring, path, passphrase)
    print(f"{args.role} keyring written to {path} with keys: {', '.join(k.id for k in ring.keys)}")
    return 0


def _default_domain() -> str:
    from privacy.keys import DEFAULT_DOMAIN

    return DEFAULT_DOMAIN


def cmd_keys_rotate(args) -> int:
    from privacy.keys import KeyringError, load_keyring, save_keyring

    path, passphrase = Path(args.key_file), _passphrase(args)
    ring = load_keyring(path, passphrase)
    # A key is rotated where its custodian keeps it; a controller keyring is rebuilt from
    # those (a body key rotated in it would differ from the one the bodies use).
    owner = "body" if args.role == "body" else "central"
    if owner not in _kinds_of(ring):
        keeper = "the key custodian's body keyring" if owner == "body" else "the central keyring"
        raise KeyringError(
            f"{path}: a {args.role} key is rotated in {keeper}, which keeps it; then rebuild "
            "the controller keyring from it: keys init --role controller --force --import ..."
        )
    domain = (args.domain or _default_domain()) if args.role == "domain" else None
    old, new = ring.rotate(args.role, domain)
    save_keyring(ring, path, passphrase)
    print(f"rotated {old.id} -> {new.id}; {old.id} is retired and kept ({path})")
    if args.role == "domain":
        print(
            f"links are kept: the next run translates pseudonyms made with {old.id} exactly to "
            f"{new.id} (docs/privacy.md, Rotation); rebuild controller keyrings with --import"
        )
    elif args.role == "audit-signing":
        print(
            "the next checkpoint is signed with the new key; rebuild controller keyrings with "
            "--import: the audit log refuses a keyring without its latest signing key"
        )
    elif args.role == "body":
        print(
            "every body must switch to the new body key for the same reference date; "
            "pseudonyms of the new key do not link to the old ones: before the next central "
            "run the controller links the households (`signals keys link`, docs/privacy.md)"
        )
    return 0


def cmd_keys_link(args) -> int:
    from privacy.body_links import make_links
    from privacy.keys import check_custody, load_keyring

    ring = load_keyring(Path(args.key_file), _passphrase(args))
    check_custody(ring, "controller", args.key_file)
    done = make_links(
        Path(args.brp),
        ring,
        Path(args.out),
        args.domain or _default_domain(),
        key_store=Path(args.key_store) if args.key_store else None,
        force=args.force,
    )
    print(
        f"{done.households:,} households linked (pseudonym_link records in the audit log, "
        f"checkpoint {done.checkpoint.sequence}):"
    )
    for path in done.tables:
        print(f"  {path}")
    for old, said in sorted(done.covered.items()):
        print(f"  {old}: links {said}")
    print("the next central run in that folder reads them for its history (fatigue, lifecycle)")
    return 0


def _kinds_of(ring) -> set[str]:
    """Which kinds of keyring (body, central, controller) `ring` is by custody."""
    from privacy.keys import CUSTODY

    held = ring.roles()
    return {
        kind for kind, (needs, banned) in CUSTODY.items() if needs <= held and not held & banned
    }


def cmd_keys_show(args) -> int:
    from privacy.keys import load_keyring

    ring = load_keyring(Path(args.key_file), _passphrase(args))
    for key in ring.keys:
        v = key.public_view()
        state = "retired" if v["retired"] else "active"
        domain = f" domain={v['domain']}" if v["domain"] else ""
        print(
            f"{v['id']:<6} {v['role']:<14} {state:<8} fingerprint {v['fingerprint']} "
            f"created {v['created']}{domain}"
        )
    return 0


def register(subparsers) -> None:
    from privacy.keys import ROLES

    keys = subparsers.add_parser("keys", help="create, rotate and inspect keyrings").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    for name, func, text in (
        ("init", cmd_keys_init, "create a body, central or controller keyring"),
        ("rotate", cmd_keys_rotate, "add a new key of a role and retire the old one (kept)"),
        ("show", cmd_keys_show, "list the keys of a keyring (never their material)"),
        (
            "link",
            cmd_keys_link,
            "controller, after a body-key rotation: link households' old and new pseudonyms "
            "so the next run keeps their history",
        ),
    ):
        k = keys.add_parser(name, help=text)
        k.add_argument("--key-file", required=True)
        k.add_argument(
            "--passphrase-file",
            help="file holding the passphrase (default: $SIGNALS_KEYRING_PASSPHRASE)",
        )
        if name == "init":
            k.add_argument("--role", choices=KINDS, default="body", help="kind of keyring")
            k.add_argument(
                "--domain",
                action="append",
                help="purpose domain of a central keyring (repeatable; default: the programme's)",
            )
            k.add_argument(
                "--import",
                dest="imports",
                action="append",
                help="controller: a body or central keyring to combine (same passphrase)",
            )
            k.add_argument("--force", action="store_true", help="replace an existing keyring")
        if name == "link":
            k.add_argument("--brp", required=True, help="the raw BRP delivery (new reference date)")
            k.add_argument("--out", required=True, help="the central runs' output folder")
            k.add_argument("--domain", help="purpose domain (default: the programme's)")
            k.add_argument("--key-store", help="run data keys (default: <out>/.keys)")
            k.add_argument(
                "--force",
                action="store_true",
                help="link even if the BRP holds fewer than half of the households of the "
                "last run made with the old key (recorded in the audit log)",
            )
        if name == "rotate":
            k.add_argument("--role", choices=ROLES, required=True, help="role of the key to rotate")
            k.add_argument("--domain", help="purpose domain of a domain key (default: programme's)")
        k.set_defaults(func=func)
