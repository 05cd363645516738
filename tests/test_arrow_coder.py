"""The pipeline's Arrow elements travel with ArrowCoder: the same data and kind come back,
their size is Arrow's, and every step that hands on Arrow data declares it."""

from __future__ import annotations

import dataclasses
import datetime as dt

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from pipeline_outputs import population

from pipelines import lifecycle
from pipelines.arrow_coder import ArrowCoder
from pipelines.options import pipeline_options

TABLE = pa.table({"pid": ["a", None, "c"], "amount": pa.array([1, 2, None], pa.int32())})


@pytest.mark.parametrize(
    "value",
    [
        TABLE,
        pa.concat_tables([TABLE, TABLE]),  # two chunks
        TABLE.schema.empty_table(),
        TABLE.to_batches()[0],
        TABLE.slice(1, 1).to_batches()[0],  # a slice: only its row travels
        pa.RecordBatch.from_pylist([], schema=TABLE.schema),
        pa.array(["x", None, "y"]),
        pa.array([], pa.string()),
    ],
    ids=lambda v: f"{type(v).__name__}-{len(v)}",
)
def test_arrow_data_comes_back_the_same_and_of_the_same_kind(value):
    coder = ArrowCoder()
    back = coder.decode(coder.encode(value))
    assert type(back) is type(value)
    assert back.equals(value)


def test_the_size_is_arrows_and_other_elements_are_refused():
    coder = ArrowCoder()
    assert coder.estimate_size(TABLE) == TABLE.nbytes
    with pytest.raises(TypeError, match="not 'text'"):
        coder.encode("text")


def test_the_registry_gives_arrow_kinds_the_arrow_coder():
    for kind in (pa.Table, pa.RecordBatch, pa.Array):
        assert beam.coders.registry.get_coder(kind) == ArrowCoder()


def test_tables_cross_a_stage_boundary_of_a_real_pipeline():
    def key(i):
        return i % 2, pa.table({"i": [i]})

    def merged(group):
        parity, tables = group
        return parity, sorted(pa.concat_tables(tables).column("i").to_pylist())

    with beam.Pipeline(options=pipeline_options()) as p:
        out = (
            p
            | beam.Create(range(4))
            | beam.Map(key).with_output_types(tuple[int, pa.Table])
            | beam.GroupByKey()
            | beam.Map(merged)
        )
        assert_that(out, equal_to([(0, [0, 2]), (1, [1, 3])]))


class _Steps(beam.pipeline.PipelineVisitor):
    """The coder Beam will use for each step's outputs and main inputs."""

    def __init__(self):
        self.outputs, self.inputs = {}, {}

    def visit_transform(self, node):
        def coder(pcoll):
            return beam.coders.registry.get_coder(pcoll.element_type)

        for tag, pcoll in node.outputs.items():
            self.outputs[f"{node.full_label}[{tag}]"] = coder(pcoll)
        self.inputs[node.full_label] = [coder(pcoll) for pcoll in node.main_inputs.values()]


def test_every_step_of_the_central_pipeline_that_hands_on_arrow_data_declares_it(tmp_path):
    from flows.bench import run_spec
    from pipelines import central

    spec = run_spec(str(population(tmp_path, persons=200)), str(tmp_path / "staging"), 8)
    # With a history, as a later month's run: its steps (the open episodes, the households
    # gone from the run) exist only then.
    state = pa.Table.from_pylist([_open_episode()], schema=lifecycle.STATE_SCHEMA)
    spec = dataclasses.replace(spec, history=state)
    p = beam.Pipeline(options=pipeline_options())
    central.build(p, spec)
    steps = _Steps()
    p.visit(steps)
    # What the audit and file writers take is Arrow data, and must travel as such.
    writers = [label for label in steps.inputs if label.startswith(("AuditWrite_", "Write_"))]
    assert len(writers) > 10
    for label in writers:
        assert steps.inputs[label] == [ArrowCoder()], label
    for producer in (
        "Read/ReadRowGroups/",
        "ReadObjections/ReadRowGroups/",
        "ExcludeObjectors/ObjectorPids",
        "JoinHouseholds/PersonsAtAddress/JoinInBucket",
        "JoinHouseholds/PersonFacts/JoinInBucket",
        "EvaluateRules/Evaluate/",
        "EvaluateRules/OpenEpisodes",
        "ApplyProportionality/ReadHistory",
        "ApplyProportionality/Assess/",
        "ApplyProportionality/ResolveAbsent",
    ):
        outputs = {k: v for k, v in steps.outputs.items() if k.startswith(producer)}
        assert outputs and set(outputs.values()) == {ArrowCoder()}, (producer, outputs)


def _open_episode() -> dict:
    return {
        "household_pid": "d1." + "a" * 32,
        "scheme": "zorgtoeslag",
        "last_signal_id": "s." + "b" * 32,
        "last_benefit_year": 2025,
        "last_signalled_on": dt.date(2024, 12, 1),
        "last_run_id": "2024-12-01-earlier",
        "episode_open": True,
        "case_outcome": None,
        "case_on": None,
    }
