"""What the per-record audit trail adds to a central run (target: at most 30% at 1M persons).

    .venv/bin/python benchmarks/audit_bench.py [--persons 1000000] [--work DIR] [--repeat 1]

The population is generated and pseudonymised once (flows/bench.py phases, reused from
--work when present). Then the whole Prefect flow runs on it twice, each in a fresh process:

    with audit     as shipped: audit records made in the Beam pipeline (ingest, exclusion,
                   join, rule evaluation, proportionality, signal), consolidated, and appended
                   to the signed Merkle log (leaf hashing, tree, segment, checkpoint)
    without audit  the same flow with the pipeline's audit record makers replaced by ones
                   that emit nothing and the log append skipped (an ablation for this
                   measurement only: nothing else changes)

It prints both wall times and the overhead (the target is on wall time: what the audit adds
to how long a run takes; CPU seconds are shown beside it, the work done), then takes the
log append apart on the run's own records (leaf hashing, tree, segment write, signing)
and times a full `audit verify` of the log. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows import bench  # noqa: E402  (the repository root is put on the path first)

TARGET = 0.30


# -- the ablation: audit record makers that emit nothing ---------------------------------------


def _no_records(*_args):
    return _empty_batch()


def _empty_batch():
    import pyarrow as pa

    from pipelines.audit_records import AUDIT_SCHEMA

    return pa.RecordBatch.from_pylist([], schema=AUDIT_SCHEMA)


def _no_maker(*_args):
    return _no_records


class _NoJson:
    """Stands in for the proportionality records' JSON (pipelines/proportionality.py
    AssessedJson): nulls."""

    def __init__(self, *_args):
        pass

    def __call__(self, assessed):
        import pyarrow as pa

        nulls = pa.nulls(assessed.num_rows, pa.string())
        return nulls, nulls


def _without_audit() -> None:
    """Replace every audit record maker of the pipeline, and the log append, with nothing."""
    import flows.run as run
    from pipelines import central, evaluate, proportionality

    central.IngestRecords = _no_maker
    central.exclusion_audit = _no_maker
    central.join_audit = _no_maker
    central.resolution_audit = _no_maker  # none without history, as here: for completeness
    evaluate.evaluation_records = _no_records
    proportionality.proportionality_records = _no_records
    proportionality.signal_records = _no_records
    proportionality.AssessedJson = _NoJson  # the JSON of those records
    run.append_run = lambda *args, **kwargs: None


def flow_variant(pseudo: str, out: str, keys: str, buckets: int, audit: bool) -> dict:
    """One whole flow run (in its own process); with audit, the append is timed too."""
    if not audit:
        _without_audit()
    else:
        import flows.run as run

        original, spent = run.append_run, {}

        def timed_append(*args, **kwargs):
            t = time.perf_counter()
            result = original(*args, **kwargs)
            spent["append_seconds"] = time.perf_counter() - t
            return result

        run.append_run = timed_append
    result = bench.flow_phase(pseudo, out, keys, buckets)
    if audit:
        result.update(spent)
    return result


# -- taking the append apart ------------------------------------------------------------------


def append_parts(run_folder: str, keys: str) -> dict:
    """Leaf hashing, tree, and the whole append + verify of the run's records, chunk by chunk."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from privacy.audit import merkle
    from privacy.audit.leaf import leaf_hashes
    from privacy.audit.log import CHUNK_ROWS, RUN_COPY, AuditLog
    from privacy.audit.signing import Signer
    from privacy.audit.verify import verify_log
    from privacy.keys import PASSPHRASE_ENV, load_keyring

    ring = load_keyring(Path(keys) / "central.keyring", os.environ[PASSPHRASE_ENV])
    copy = Path(run_folder) / RUN_COPY
    read = hashing = 0.0
    leaves, at = [], 0
    t = time.perf_counter()
    for batch in pq.ParquetFile(copy).iter_batches(batch_size=CHUNK_ROWS):
        chunk = pa.Table.from_batches([batch])
        read += time.perf_counter() - t
        t = time.perf_counter()
        leaves.append(leaf_hashes(chunk, at))
        hashing += time.perf_counter() - t
        at += chunk.num_rows
        t = time.perf_counter()
    t = time.perf_counter()
    tree = merkle.Tree(0, {}, b"".join(leaves))
    tree.root(), tree.frontier()
    building = time.perf_counter() - t
    scratch = Path(tempfile.mkdtemp(prefix="audit-bench-log-"))
    try:
        t = time.perf_counter()
        AuditLog(scratch / "log").append(copy, "bench", Signer(ring))
        whole = time.perf_counter() - t
        t = time.perf_counter()
        report = verify_log(scratch / "log")
        verifying = time.perf_counter() - t
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "records": at,
        "read_copy": read,
        "leaf_hashing": hashing,
        "tree": building,
        "append_total": whole,
        "verify_total": verifying,
        "verify_ok": report.ok,
    }


# -- driver ----------------------------------------------------------------------------------


def _prepare(work: Path, persons: int, seed: int) -> Path:
    raw, pseudo = work / f"raw-{persons}", work / f"pseudo-{persons}"
    marker = work / f"pseudo-{persons}.json"  # made as this version makes deliveries
    wanted = {"persons": persons, "seed": seed, "deliveries": bench.DELIVERY_FORMAT}
    if not (marker.is_file() and json.loads(marker.read_text()) == wanted):
        print(f"generating {persons:,} persons and pseudonymising them (once) ...", flush=True)
        for folder in (raw, pseudo):
            shutil.rmtree(folder, ignore_errors=True)
        bench.in_child(bench.generate_phase, raw=str(raw), persons=persons, seed=seed)
        bench.in_child(bench.pseudonymise_phase, raw=str(raw), pseudo=str(pseudo))
        marker.write_text(json.dumps(wanted))
    return pseudo


def run(persons: int, work: Path, seed: int, buckets: int, repeat: int) -> dict:
    import os

    from privacy.keys import PASSPHRASE_ENV

    os.environ.setdefault(PASSPHRASE_ENV, "signals audit bench: throwaway keyrings")
    pseudo = _prepare(work, persons, seed)
    keys = work / "keys"
    figures: dict = {"persons": persons, "with": [], "without": []}
    for i in range(repeat):
        for audit in (False, True):  # alternate, so slow phases of a busy machine hit both
            label = "with" if audit else "without"
            out = work / f"runs-{label}"
            shutil.rmtree(out, ignore_errors=True)
            print(f"run {i + 1}/{repeat} {label} audit ...", flush=True)
            result = bench.in_child(
                flow_variant,
                pseudo=str(pseudo),
                out=str(out),
                keys=str(keys),
                buckets=buckets,
                audit=audit,
            )
            figures[label].append(result)
            print(
                f"  {result['flow_seconds']:.1f} s (peak {result['peak_mb']:,.0f} MB)", flush=True
            )
    folder = figures["with"][-1]["folder"]
    figures["append_parts"] = bench.in_child(append_parts, run_folder=folder, keys=str(keys))
    return figures


def _hashing() -> str:
    from privacy.audit import sha256

    if sha256.NATIVE:
        return "C extension (OpenSSL, GIL released; privacy/audit/sha256.py)"
    return "hashlib: the C extension was not built here, so the audit hashes slower"


def _pair_overheads(f: dict, key: str) -> list[float]:
    """The overhead of each pair of runs, the one without audit and the one with it after it."""
    pairs = zip(f["without"], f["with"], strict=True)
    return sorted(with_[key] / without[key] - 1 for without, with_ in pairs)


def _spread(values: list[float]) -> str:
    return " / ".join(f"{v:.1%}" for v in (values[0], statistics.median(values), values[-1]))


def report(f: dict) -> list[str]:
    def best(label: str, key: str) -> float:
        return min(r[key] for r in f[label])

    wall_with, wall_without = best("with", "flow_seconds"), best("without", "flow_seconds")
    cpu_with, cpu_without = best("with", "cpu_seconds"), best("without", "cpu_seconds")
    append = min(r.get("append_seconds", 0.0) for r in f["with"])
    parts = f["append_parts"]
    n = parts["records"]
    lines = [
        f"audit overhead on a {f['persons']:,}-person run (whole Prefect flow, best of "
        f"{len(f['with'])}; wall = what the audit adds to the run's time, the target's "
        "measure; CPU = the work, in the run's process and those it started, some of it "
        "done beside the report)",
        f"{'':34}{'wall s':>10}{'CPU s':>10}",
        f"  without audit records and log   {wall_without:10.1f}{cpu_without:10.1f}",
        f"  with audit records and log      {wall_with:10.1f}{cpu_with:10.1f}",
        f"  overhead                        {wall_with / wall_without - 1:10.1%}"
        f"{cpu_with / cpu_without - 1:10.1%}   (target: at most {TARGET:.0%})",
        f"  the log append, beside the report{append:9.1f}",
    ]
    if len(f["with"]) > 1:  # each pair ran in turn: the spread is the machine's as much as ours
        walls, cpus = _pair_overheads(f, "flow_seconds"), _pair_overheads(f, "cpu_seconds")
        lines.append(
            f"  per pair, least / median / most {_spread(walls)} wall, {_spread(cpus)} CPU"
        )
    lines += [
        f"audit records in the run          {n:10,}   (taken apart in one process; the run's "
        "append hashes leaves and tree in a worker per core)",
        f"  read the run's copy             {parts['read_copy']:10.2f}",
        f"  leaf hashing (canonical bytes)  {parts['leaf_hashing']:10.2f}   "
        f"({n / parts['leaf_hashing']:,.0f} records/s)",
        f"  Merkle tree (RFC 6962)          {parts['tree']:10.2f}   "
        f"({n / parts['tree']:,.0f} leaves/s)",
        f"  append from the copy, in all    {parts['append_total']:10.2f}",
        f"  audit verify of that log        {parts['verify_total']:10.2f}   "
        f"(ok: {parts['verify_ok']})",
        f"  SHA-256 loop                    {_hashing()}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--persons", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--buckets", type=int, default=256)
    p.add_argument("--repeat", type=int, default=1, help="runs of each variant (best counts)")
    p.add_argument("--work", help="keep the population and runs here (reused when present)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="audit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    figures = run(args.persons, work, args.seed, args.buckets, args.repeat)
    print("\n".join(report(figures)))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
