"""`signals demo`: the whole chain on one machine, as the bodies and the controller would run it.

generate (or take) raw deliveries -> create the keyrings (body, central, controller)
-> pseudonymise every source at "the body" -> central run -> summary -> the
controller's worklist. The demo keeps its keyring passphrase in a file next to the
keyrings so it can run unattended, and keeps all three keyrings in one folder; a real
installation does neither (docs/privacy.md, key custody).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from tqdm import tqdm

from flows.summary import print_run_summary
from privacy.files import written_whole


def _demo_passphrase(keys_dir: Path) -> str:
    from privacy.keys import PASSPHRASE_ENV

    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    path = keys_dir / "demo-passphrase.txt"
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        with written_whole(path, private=True) as tmp:
            tmp.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def _demo_keyrings(keys_dir: Path, passphrase: str) -> dict[str, Path]:
    """The body, central and controller keyrings (made once, reused on later demos)."""
    from privacy.keys import DEFAULT_DOMAIN, Keyring, load_keyring, save_keyring

    paths = {k: keys_dir / f"{k}.keyring" for k in ("body", "central", "controller")}
    if not paths["body"].exists():
        ring = Keyring()
        ring.add("body")
        save_keyring(ring, paths["body"], passphrase)
    if not paths["central"].exists():
        ring = Keyring()
        ring.add("domain", DEFAULT_DOMAIN)
        ring.add("run-data")
        ring.add("audit-signing")
        save_keyring(ring, paths["central"], passphrase)
    controller = Keyring()
    for kind in ("body", "central"):
        controller.merge(load_keyring(paths[kind], passphrase))
    save_keyring(controller, paths["controller"], passphrase)
    return paths


def run_demo(args) -> int:
    from flows.run import run_flow
    from pipelines.contract import SOURCES
    from pipelines.read_deliveries import find_delivery
    from privacy.keys import PASSPHRASE_ENV, load_keyring
    from privacy.pseudonymise import pseudonymise_delivery
    from privacy.reidentify import write_worklist

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
    keyrings = _demo_keyrings(keys_dir, passphrase)
    # The flow reads the central keyring's passphrase from the environment only.
    os.environ.setdefault(PASSPHRASE_ENV, passphrase)
    ring = load_keyring(keyrings["body"], passphrase)

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
        key_file=str(keyrings["central"]),
    )
    print(f"  run finished in {time.perf_counter() - t:.1f} s\n")
    print_run_summary(Path(folder))
    worklist = write_worklist(
        Path(folder),
        find_delivery(raw, "brp", args.reference_date),
        load_keyring(keyrings["controller"], passphrase),
        out / "worklist.csv",
    )
    print(
        f"\ncontroller's worklist: {worklist.rows:,} households ({worklist.signals:,} signals) "
        f"re-identified -> {worklist.csv}"
        "\n  (the only file with BSNs; each re-identification is logged in the audit log)"
    )
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s")
    _print_next_steps(out, Path(folder), keyrings)
    return 0


def _print_next_steps(out: Path, run: Path, keyrings: dict[str, Path]) -> None:
    """Commands to try on what the demo made, with its own paths (relative where shorter)."""

    from flows.cli import program
    from flows.cli import shell_path as show

    runs, passphrase = show(out / "runs"), out / "keys" / "demo-passphrase.txt"
    where = f"$(cat {show(passphrase)})" if passphrase.exists() else "<your passphrase>"
    # `make demo` runs .venv/bin/signals, which is on no PATH until the venv is activated.
    signals = program()
    print(
        "\nnext, on these outputs (runs and audit log in "
        f"{runs}, keyrings in {show(out / 'keys')}):\n"
        f"  export SIGNALS_KEYRING_PASSPHRASE={where}\n"
        f"  {signals} runs list --runs {runs}\n"
        f"  {signals} audit verify --log {runs}\n"
        f"  {signals} audit query --log {runs} --count-by name,status\n"
        f"  {signals} report --run {show(run)} --out {show(out / 'report')} "
        f"--key-file {show(keyrings['controller'])}"
    )
