"""Writing deliveries to disk exactly as the contract describes: data file plus manifest.

`write_manifest` is public so that tests and tools which craft their own (edge-case)
data files can give them a valid manifest.json without re-implementing the contract.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.contract import MANIFEST_KEYS, SCHEMA_VERSION, SOURCES, oin_is_valid
from privacy.files import written_whole

FORMATS = ("csv", "parquet")
DEFAULT_FORMATS = {name: ("parquet" if name == "tax" else "csv") for name in SOURCES}

# Synthetic OINs with the structure of a real one ("00000001" + RSIN + "000"). The RSINs
# are taken from the 9999... range and pass the 11-proef; they identify no real body.
SUPPLIER_OINS = {
    "brp": "00000001999900006000",  # municipality
    "objections": "00000001999900006000",  # same municipality
    "tax": "00000001999900018000",  # Belastingdienst
    "benefits": "00000001999900031000",  # Dienst Toeslagen / UWV / SVB (one channel)
    "housing": "00000001999900043000",  # housing corporations' collective channel
    "arrears": "00000001999900055000",  # vroegsignalering channel of creditors
    "health_insurance": "00000001999900067000",  # health insurers' channel
}


def delivery_dir(out_dir: Path, source: str, reference_date: dt.date) -> Path:
    """<out_dir>/<source>/<reference_date ISO>."""
    return Path(out_dir) / source / reference_date.isoformat()


def extraction_timestamp(reference_date: dt.date | str, source: str, seed: int = 0) -> str:
    """A deterministic extraction moment: the night after the reference date (01:00-05:00 UTC)."""
    day = _as_date(reference_date)
    digest = hashlib.sha256(f"{seed}:{day.isoformat()}:{source}".encode()).digest()
    seconds = 3600 + int.from_bytes(digest[:4], "big") % (4 * 3600)
    moment = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    return (moment + dt.timedelta(seconds=seconds)).isoformat()


def write_data(table: pa.Table, directory: Path, fmt: str) -> Path:
    """Write data.csv or data.parquet atomically; remove a stale file of the other format."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"data.{fmt}"
    with written_whole(path) as tmp:
        if fmt == "csv":
            options = pacsv.WriteOptions(
                include_header=True,
                delimiter=",",
                quoting_style="none",
                quoting_header="none",
                batch_size=65536,
            )
            pacsv.write_csv(table, str(tmp), options)
        else:
            pq.write_table(table, str(tmp), compression="zstd")
    for other in FORMATS:
        stale = directory / f"data.{other}"
        if other != fmt and stale.exists():
            stale.unlink()
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(
    directory: Path | str,
    source: str,
    reference_date: dt.date | str,
    data_path: Path | str,
    row_count: int,
    supplier_oin: str | None = None,
    extracted_at: dt.datetime | str | None = None,
) -> dict:
    """Write <directory>/manifest.json for a data file and return the manifest as a dict.

    `data_path` may be relative to `directory`. `supplier_oin` defaults to the fixed
    synthetic OIN of the source's supplier; `extracted_at` defaults to a deterministic
    moment in the night after the reference date. The sha256 is computed over the data
    file's bytes as they are on disk now.
    """
    directory = Path(directory)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(SOURCES)}")
    oin = supplier_oin if supplier_oin is not None else SUPPLIER_OINS[source]
    if not oin_is_valid(oin):
        raise ValueError(f"supplier_oin {oin!r} for {source} is not 20 digits")
    if isinstance(row_count, bool) or not isinstance(row_count, int) or row_count < 0:
        raise ValueError(f"row_count must be a non-negative int, got {row_count!r}")
    data = Path(data_path)
    data = data if data.is_absolute() else directory / data
    day = _as_date(reference_date)
    if extracted_at is None:
        extracted_at = extraction_timestamp(day, source)
    elif isinstance(extracted_at, dt.datetime):
        extracted_at = extracted_at.isoformat()
    manifest = dict(
        zip(
            MANIFEST_KEYS,
            (
                source,
                oin,
                day.isoformat(),
                str(extracted_at),
                SCHEMA_VERSION,
                row_count,
                sha256_of(data),
            ),
            strict=True,
        )
    )
    with written_whole(directory / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)
