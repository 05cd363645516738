"""Objections (opt-out) applied before any join: objectors' records never reach the join.

A person who objected with scope `all` is removed from every person-keyed source.
Where an objector is someone's partner, the partner pseudonym is blanked and
`partner_withheld` set, so the household is known to be incomplete (and its income
unknown) without anything about the objector going further. Objections with a
scheme scope are not exclusions: they travel on and suppress only that scheme.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

# Sources keyed by a person's pseudonym: objectors' rows are removed from each.
PERSON_SOURCES = ("brp", "tax", "benefits", "arrears", "health_insurance")
OBJECTIONS = "objections"  # the source of the objections themselves


def objector_pids(batch: pa.RecordBatch) -> pa.Array:
    """Pseudonyms of persons whose objection covers all processing."""
    return batch.column("bsn").filter(pc.equal(batch.column("scope"), "all"))


class DropObjectorsFn(beam.DoFn):
    """Removes rows whose subject objected; in brp also withholds objecting partners."""

    def __init__(self, source: str, subject: str = "bsn", also: pa.Array | None = None):
        self.source, self.subject = source, subject
        self.also = pa.array([], pa.string()) if also is None else also

    def process(self, batch: pa.RecordBatch, objectors: list[pa.Array]):
        excluded = pa.chunked_array([*objectors, self.also], pa.string()).combine_chunks()
        keep = pc.invert(pc.is_in(batch.column(self.subject), value_set=excluded))
        dropped = batch.num_rows - pc.sum(keep).as_py() if batch.num_rows else 0
        Metrics.counter("exclude", f"{self.source}_rows_excluded").inc(dropped or 0)
        batch = batch.filter(keep)
        if self.source == "brp":
            partner = batch.column("partner_bsn")
            withheld = pc.fill_null(pc.is_in(partner, value_set=excluded), False)
            blanked = pc.if_else(withheld, pa.scalar(None, pa.string()), partner)
            batch = batch.set_column(
                batch.schema.get_field_index("partner_bsn"), "partner_bsn", blanked
            ).append_column("partner_withheld", withheld)
        if batch.num_rows:
            yield batch


class ExcludeObjectors(beam.PTransform):
    """Applies scope-`all` objections to every person-keyed source, before the join.

    In: {source: PCollection[RecordBatch]} including `objections`.
    Out: the same dict without objectors' rows; `objections` keeps only scheme-scoped
    objections of non-objectors; `brp` gains `partner_withheld` (bool); and the key
    `objector_pids` holds a PCollection of pseudonym arrays (for the exclusion audit).
    `also`: pseudonyms of more objectors to everything, known when the run is built (the
    persons of objection rows the body quarantined: pipelines/read_deliveries.py
    NAMED_BY_QUARANTINE); their exclusion is audited by the caller.
    """

    def __init__(self, person_sources: tuple[str, ...], also: pa.Array | None = None):
        super().__init__()
        self.person_sources, self.also = person_sources, also

    def expand(self, sources):
        objectors = sources[OBJECTIONS] | "ObjectorPids" >> beam.Map(
            objector_pids
        ).with_output_types(pa.Array)
        side = beam.pvalue.AsList(objectors)
        out = dict(sources)
        for name in self.person_sources + (OBJECTIONS,):
            out[name] = sources[name] | f"DropObjectors_{name}" >> beam.ParDo(
                DropObjectorsFn(name, also=self.also), side
            ).with_output_types(pa.RecordBatch)
        out[OBJECTIONS] = out[OBJECTIONS] | "SchemeScopedOnly" >> beam.Map(
            lambda b: b.filter(pc.not_equal(b.column("scope"), "all"))
        ).with_output_types(pa.RecordBatch)
        out["objector_pids"] = objectors
        return out
