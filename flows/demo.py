"""`signals demo`: the whole chain on one machine, as the bodies and the controller would run it.

generate (or take) raw deliveries -> create a keyring -> pseudonymise every source
at "the body" -> central run -> summary. The demo keeps its keyring passphrase in a
file next to the keyring so it can run unattended; a real installation never does.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from tqdm import tqdm

from flows.summary import print_run_summary


def _demo_passphrase(keys_dir: Path) -> str:
    from privacy.keys import PASSPHRASE_ENV

    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    path = keys_dir / "demo-passphrase.txt"
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        os.chmod(path, 0o600)
    return path.read_text().strip()


def run_demo(args) -> int:
    from flows.run import run_flow
    from pipelines.contract import SOURCES
    from pipelines.read_deliveries import find_delivery
    from privacy.keys import Keyring, load_keyring, save_keyring
    from privacy.pseudonymise import pseudonymise_delivery

    out = Path(args.out).resolve()
    started = time.perf_counter()
    if args.from_raw:
        raw = Path(args.from_raw).resolve()
        print(f"using raw deliveries from {raw}")
    else:
        from pipelines.synthetic import generate

        raw = out / "raw"
        print(f"generating {args.persons:,} persons (seed {args.seed}) into {raw} ...")
        t = time.perf_counter()
        generate(raw, persons=args.persons, seed=args.seed, reference_date=args.reference_date)
        print(f"  done in {time.perf_counter() - t:.1f} s")

    keys_dir = out / "keys"
    passphrase = _demo_passphrase(keys_dir)
    keyring_path = keys_dir / "body.keyring"
    if not keyring_path.exists():
        ring = Keyring()
        ring.add("body")
        save_keyring(ring, keyring_path, passphrase)
    ring = load_keyring(keyring_path, passphrase)

    pseudonymised = out / "pseudonymised"
    t = time.perf_counter()
    for name in tqdm(list(SOURCES), desc="pseudonymising at the bodies", unit="source"):
        delivery = find_delivery(raw, name, args.reference_date)
        pseudonymise_delivery(delivery, ring, pseudonymised)
    print(f"  pseudonymised in {time.perf_counter() - t:.1f} s")

    print("central run (Prefect flow, Beam DirectRunner) ...")
    t = time.perf_counter()
    folder = run_flow(
        deliveries=str(pseudonymised),
        reference_date=args.reference_date,
        out=str(out / "runs"),
    )
    print(f"  run finished in {time.perf_counter() - t:.1f} s\n")
    print_run_summary(Path(folder))
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s")
    return 0
