"""The central pipeline, unchanged, on Beam's DaskRunner against a `distributed` LocalCluster of
two worker processes: the published outputs equal the DirectRunner's on the same deliveries.

pipelines/dask_runner.py says which bugs of Beam 2.77's DaskRunner it fixes; the toy
pipelines here pin each fix (tagged outputs, a side input read twice, several sinks), the
last test runs the whole graph of pipelines/central.py on 1,000 synthetic persons.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import time
import uuid
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.internal import pickler
from apache_beam.io.parquetio import WriteToParquetBatched
from apache_beam.runners.runner import PipelineState
from pipeline_outputs import assert_same_outputs, population, run_central

from pipelines.options import pipeline_options

distributed = pytest.importorskip("distributed")


PASSPHRASE = "the dask workers' keyring passphrase"


@pytest.fixture(scope="module")
def cluster():
    # The workers start with the keyring's passphrase in their environment, as a cluster's
    # workers are deployed (docs/scaling.md): they open the central keyring themselves.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
        with distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as c:
            yield c


def dask_options(cluster):
    return pipeline_options("DaskRunner", [f"--dask_client_address={cluster.scheduler_address}"])


class SplitParity(beam.DoFn):
    def process(self, x):
        yield x if x % 2 == 0 else beam.pvalue.TaggedOutput("odd", x)


def _write_list(folder: str, name: str):
    def write(values):
        with open(os.path.join(folder, name), "w") as f:
            f.write(",".join(str(v) for v in sorted(values)))

    return write


def test_each_tagged_output_gets_its_own_elements_and_every_sink_runs(cluster, tmp_path):
    with beam.Pipeline(options=dask_options(cluster)) as p:
        numbers = p | beam.Create(range(10))
        parts = numbers | beam.ParDo(SplitParity()).with_outputs("odd", main="even")
        (
            parts.even
            | "ListEven" >> beam.combiners.ToList()
            | "WriteEven" >> beam.Map(_write_list(str(tmp_path), "even"))
        )
        (
            parts.odd
            | "ListOdd" >> beam.combiners.ToList()
            | "WriteOdd" >> beam.Map(_write_list(str(tmp_path), "odd"))
        )
    assert (tmp_path / "even").read_text() == "0,2,4,6,8"
    assert (tmp_path / "odd").read_text() == "1,3,5,7,9"


def _make_folder(_, root: str) -> str:
    folder = os.path.join(root, uuid.uuid4().hex)
    os.mkdir(folder)
    return folder


def test_a_side_input_is_computed_once_however_often_it_is_read(cluster, tmp_path):
    with beam.Pipeline(options=dask_options(cluster)) as p:
        folder = p | "Once" >> beam.Create([None]) | beam.Map(_make_folder, str(tmp_path))
        single = beam.pvalue.AsSingleton(folder)
        xs = p | "Xs" >> beam.Create(range(3))
        xs | "UseA" >> beam.Map(lambda x, f: open(f"{f}/a{x}", "w").close(), single)
        xs | "UseB" >> beam.Map(lambda x, f: open(f"{f}/b{x}", "w").close(), single)
    (made,) = list(tmp_path.iterdir())
    assert sorted(p.name for p in made.iterdir()) == ["a0", "a1", "a2", "b0", "b1", "b2"]


def test_a_run_keeps_the_clusters_info_lines_out_of_its_output(cluster, caplog):
    """Scheduler, nanny and worker info (clients coming and going: ~30 lines a run) would
    bury the run's own progress lines; the cluster's warnings still show."""
    with caplog.at_level(logging.INFO):
        with beam.Pipeline(options=dask_options(cluster)) as p:
            p | beam.Create(range(3)) | beam.Map(lambda x: x)
    chatter = [r for r in caplog.records if r.name.startswith("distributed")]
    assert chatter == [], [r.getMessage() for r in chatter]
    assert logging.getLogger("distributed").getEffectiveLevel() == logging.WARNING


def test_write_to_parquet_writes_every_row_once(cluster, tmp_path):
    schema = pa.schema([("x", pa.int64())])
    with beam.Pipeline(options=dask_options(cluster)) as p:
        (
            p
            | beam.Create(range(20))
            | beam.Map(lambda x: pa.table({"x": [x]}, schema=schema))
            | WriteToParquetBatched(str(tmp_path / "part"), schema=schema, file_name_suffix=".pq")
        )
    assert sorted(pq.read_table(tmp_path).column("x").to_pylist()) == list(range(20))
    # Only the parts: the sink's temporary folder is gone (finalise ran, once).
    assert {p.suffix for p in tmp_path.iterdir()} == {".pq"}


class Slow(beam.DoFn):
    def process(self, x):
        time.sleep(0.5)
        yield x


def test_a_timed_wait_leaves_the_pipeline_running_and_a_later_wait_sees_it_done(cluster, tmp_path):
    """Beam's contract: wait_until_finish(duration) returns the state when the time is up.
    It used to raise a bare TimeoutError, mark the pipeline failed and close the client."""
    p = beam.Pipeline(options=dask_options(cluster))
    _ = p | beam.Create(range(4)) | beam.ParDo(Slow()) | beam.Map(_touch, str(tmp_path))
    result = p.run()
    assert result.wait_until_finish(duration=1) == PipelineState.RUNNING  # 1 ms
    assert result.wait_until_finish() == PipelineState.DONE
    assert sorted(int(f.name) for f in tmp_path.iterdir()) == [0, 1, 2, 3]


def _touch(x, folder):
    Path(folder, str(x)).touch()
    return x


# -- the central pipeline ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pseudonymised(tmp_path_factory):
    return population(tmp_path_factory.mktemp("dask-population"))


class FailOnSeven(beam.DoFn):
    def process(self, x):
        if x == 7:
            raise ValueError("element 7 is refused")
        yield x


def test_an_error_in_a_worker_fails_the_pipeline_on_the_client(cluster):
    with pytest.raises(ValueError, match="element 7 is refused"):
        with beam.Pipeline(options=dask_options(cluster)) as p:
            _ = p | beam.Create(range(10)) | beam.ParDo(FailOnSeven())


def _from_keyring_file(domain, path):
    """The same domain key, saved in a keyring file that the workers open themselves."""
    from privacy.keys import Key, Keyring, save_keyring
    from privacy.pseudonyms import DomainPseudonymiser

    key = Key(id=domain.key_id, role="domain", material=domain._material, domain=domain.domain)
    save_keyring(Keyring([key]), path, PASSPHRASE)
    shipped = DomainPseudonymiser.from_keyring_file(path, Keyring([key]), domain.domain)
    assert key.material not in pickle.dumps(shipped)
    assert pickler.loads(pickler.dumps(shipped))._material is None  # as Beam ships a DoFn
    return shipped


def test_the_central_pipeline_gives_the_same_outputs_on_dask_as_on_the_direct_runner(
    cluster, pseudonymised
):
    from flows.bench import run_spec

    root = pseudonymised.parent
    spec = run_spec(str(pseudonymised), str(root / "direct"), buckets=2)
    direct = run_central(spec, pipeline_options())
    # On the cluster the job carries the keyring's path, not the key: each worker opens it.
    domain = _from_keyring_file(spec.domain, root / "central.keyring")
    with distributed.Client(cluster) as client, distributed.get_task_stream(client) as tasks:
        on_dask = run_central(
            dataclasses.replace(spec, staging=root / "dask", domain=domain), dask_options(cluster)
        )
    assert_same_outputs(direct, on_dask)
    workers = {t["worker"] for t in tasks.data}
    assert len(workers) >= 2, f"all tasks ran on {workers}"
