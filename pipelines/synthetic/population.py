"""The synthetic population generator: one raw delivery per source, as the bodies send them.

`generate` builds a population of households (demography), gives the adults incomes,
assets and assessment years (economy), housing, registration and insurance (living),
benefit payments with realistic non-take-up (benefits), early debt signals and
objections (registers), turns it into one table per source in contract column order
(sources), injects a small share of realistic bad rows (corrupt) and writes each
delivery with its manifest (delivery).

Every stage draws from its own random stream derived from (seed, stage), so the same
seed and arguments give byte-identical files, and changing e.g. the bad-row rate does not
change the good data. Figures behind the distributions are cited in `stats`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipelines.contract import SOURCES

from .benefits import build_benefits
from .corrupt import inject
from .delivery import (
    DEFAULT_FORMATS,
    FORMATS,
    delivery_dir,
    extraction_timestamp,
    write_data,
    write_manifest,
)
from .demography import Population, build_demography
from .economy import build_economy
from .living import build_living
from .registers import build_arrears, build_objections
from .sources import build_tables

# Stream ids per stage: stable numbers, so adding a stage never shifts another's stream.
_STREAMS = {
    "demography": 1,
    "economy": 2,
    "living": 3,
    "benefits": 4,
    "arrears": 5,
    "objections": 6,
    "tables": 7,
}
_CORRUPT_STREAM = 100


def build_population(persons: int, seed: int, reference_date: dt.date) -> Population:
    """The full synthetic population (all stages) as arrays, without writing anything."""

    def rng(stage: str) -> np.random.Generator:
        return np.random.default_rng([seed, _STREAMS[stage]])

    pop = build_demography(persons, reference_date, rng("demography"))
    build_economy(pop, rng("economy"))
    build_living(pop, rng("living"))
    build_benefits(pop, rng("benefits"))
    build_arrears(pop, rng("arrears"))
    build_objections(pop, rng("objections"))
    return pop


def generate(
    out_dir: Path,
    persons: int,
    seed: int,
    reference_date: dt.date,
    formats: dict[str, str] | None = None,
    bad_row_rate: float = 0.005,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Write one raw delivery per source under out_dir and describe what was written.

    Each delivery is <out_dir>/<source>/<reference_date ISO>/data.csv|data.parquet plus
    manifest.json. Formats default to CSV, except `tax` which is Parquet; `formats`
    overrides per source. About `bad_row_rate` of each source's rows are bad (see
    `corrupt`). Returns, per source: path (data file), manifest (path), format,
    row_count (data rows incl. bad rows), bad_rows ({kind: count}); the benefits entry
    also has `truth`: per scheme the generator's own eligible / receiving counts.
    """
    fmts = _resolve_formats(formats)
    if not 0 <= bad_row_rate < 1:
        raise ValueError(f"bad_row_rate must be in [0, 1), got {bad_row_rate}")
    say = progress or (lambda _msg: None)
    pop = build_population(persons, seed, reference_date)
    say(f"population: {pop.n_persons:,} persons in {pop.n_households:,} households")
    tables = build_tables(pop, np.random.default_rng([seed, _STREAMS["tables"]]))
    results: dict[str, dict] = {}
    for index, name in enumerate(SOURCES):
        table, protected = tables[name]
        rng = np.random.default_rng([seed, _CORRUPT_STREAM, index])
        table, bad = inject(table, SOURCES[name], fmts[name], bad_row_rate, rng, protected)
        directory = delivery_dir(Path(out_dir), name, reference_date)
        path = write_data(table, directory, fmts[name])
        write_manifest(
            directory,
            name,
            reference_date,
            path.name,
            table.num_rows,
            extracted_at=extraction_timestamp(reference_date, name, seed),
        )
        results[name] = {
            "path": path,
            "manifest": directory / "manifest.json",
            "format": fmts[name],
            "row_count": table.num_rows,
            "bad_rows": bad,
        }
        say(f"{name}: {table.num_rows:,} rows ({sum(bad.values()):,} bad) -> {path}")
    results["benefits"]["truth"] = pop.extra["benefit_truth"]
    return results


def _resolve_formats(formats: dict[str, str] | None) -> dict[str, str]:
    resolved = dict(DEFAULT_FORMATS)
    for source, fmt in (formats or {}).items():
        if source not in SOURCES:
            raise ValueError(
                f"formats: unknown source {source!r}; expected one of {sorted(SOURCES)}"
            )
        if fmt not in FORMATS:
            raise ValueError(
                f"formats[{source!r}]: unknown format {fmt!r}; expected one of {FORMATS}"
            )
        resolved[source] = fmt
    return resolved
