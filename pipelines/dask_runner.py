"""Beam's DaskRunner with the three translation fixes this pipeline needs (Beam 2.77).

The stock runner (apache_beam.runners.dask) turns a Beam graph into dask bags, but
gives wrong results for any graph like ours:

1. A ParDo's tagged outputs are not told apart: every consumer of any of its outputs
   gets the elements of all of them (ReadDeliveries' rows would include its quarantine).
   Outputs made in finish_bundle are dropped, and in a threaded worker the receiving
   list is shared between partitions.
2. A side input is computed again inside every task that reads it (`list(bag)` in the
   task), so whatever is upstream runs again: WriteToParquetBatched's initialise step
   makes a new temporary folder each time and rows are written twice.
3. Only the bag of the last transform is computed: branches that do not feed it (all
   our writes but one) never run.

This runner keeps the stock one's options (`--dask_client_address`, `--dask_npartitions`
...), client, overrides and its Create, GroupByKey and Flatten translations, and
replaces the ParDo translation and the graph walk: a ParDo's bag holds (tag, value)
pairs and each consumer selects its tag; a side input is one dask Item, computed once
and handed to every task that reads it; every bag no one consumes is computed. The
pipeline graph itself is unchanged. pipelines/options.py selects this runner for
`--runner DaskRunner`.
"""

from __future__ import annotations

import logging

import dask
from apache_beam import DoFn, ParDo, pvalue
from apache_beam.internal import pickler
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.common import (
    DoFnContext,
    DoFnInvoker,
    DoFnSignature,
    _OutputHandler,
)
from apache_beam.runners.dask import dask_runner as stock
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.runners.dask.transform_evaluator import (
    TRANSLATIONS,
    Flatten,
    NoOp,
    OneReceiver,
    get_windowed_value,
)
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.sideinputs import SideInputMap


def _run_partition(items, fn, label, window_fn, args, kwargs, views, *side_values):
    """One dask partition as one Beam bundle: returns (tag, value) for every output."""
    fn = pickler.loads(pickler.dumps(fn))  # a DoFn instance per bundle, as Beam's workers do
    receivers = OneReceiver()
    side_inputs = [
        SideInputMap(view, options, values)
        for (view, options), values in zip(views, side_values, strict=True)
    ]
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn),
        _OutputHandler(
            window_fn=window_fn,
            main_receivers=receivers[None],
            tagged_receivers=receivers,
            per_element_output_counter=None,
            output_batch_converter=None,
            process_yields_batches=False,
            process_batch_yields_elements=False,
        ),
        context=DoFnContext(label, state=None),
        side_inputs=side_inputs,
        input_args=args,
        input_kwargs=kwargs,
        user_state_context=None,
        bundle_finalizer_param=DoFn.BundleFinalizerParam(),
    )
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(get_windowed_value(item, window_fn))
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return [
        (out.tag, out.value.value) if isinstance(out, pvalue.TaggedOutput) else (None, out.value)
        for out in receivers.values
    ]


class _SelectTag:
    """Picklable filter: the pairs of one output tag."""

    def __init__(self, tag):
        self.tag = tag

    def __call__(self, pair) -> bool:
        return pair[0] == self.tag


def _value(pair):
    return pair[1]


def _windowed_concat(*parts) -> list:
    """A side input's partitions as one list of windowed values."""
    return [get_windowed_value(v, None) for part in parts for v in part]


class _Translator(PipelineVisitor):
    """Builds one dask bag per Beam transform; ParDo bags hold (tag, value) pairs."""

    def __init__(self, bag_kwargs: dict):
        self.bag_kwargs = bag_kwargs
        self.bags: dict = {}
        self.tagged: set = set()
        self.consumed: set = set()

    def bag_of(self, pcoll):
        producer = pcoll.producer
        self.consumed.add(producer)
        bag = self.bags[producer]
        if producer in self.tagged:
            bag = bag.filter(_SelectTag(pcoll.tag)).map(_value)
        return bag

    def visit_transform(self, node) -> None:
        transform = node.transform
        inputs = [
            self.bag_of(i)
            for i in node.inputs
            if not isinstance(i, pvalue.PBegin) and i.producer in self.bags
        ]
        if type(transform) is ParDo:
            self.bags[node] = self._pardo(node, inputs[0])
            self.tagged.add(node)
            return
        op = TRANSLATIONS.get(type(transform), NoOp)(node, bag_kwargs=self.bag_kwargs)
        if isinstance(op, Flatten):
            self.bags[node] = op.apply(inputs)
        else:
            self.bags[node] = op.apply(inputs[0] if inputs else None)

    def _pardo(self, node, bag):
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        main = next(iter(node.main_inputs.values()))
        window_fn = main.windowing.windowfn if hasattr(main, "windowing") else None
        views, items = [], []
        for side in node.side_inputs:
            # One task computes it once; every task that reads it depends on that task. Not
            # optimised: fusion would copy the upstream steps into each reader.
            parts = self.bag_of(side.pvalue).to_delayed(optimize_graph=False)
            items.append(dask.delayed(_windowed_concat, pure=True)(*parts))
            views.append((type(side), side._view_options()))
        return bag.map_partitions(
            _run_partition,
            transform.fn,
            transform.label,
            window_fn,
            list(args),
            kwargs,
            views,
            *items,
        )

    def leaves(self) -> list:
        return [bag for node, bag in self.bags.items() if node not in self.consumed]


class DaskRunnerResult(stock.DaskRunnerResult):
    """Waits for every output and then closes the client the runner opened.

    Beam's own waits with `as_completed(..., with_results=True)`, fetching every leaf's
    result into the client only to raise a worker's error there. The results are not
    needed (the leaves write files), and under load the fetch once hung with every task
    done (a test run stuck for 15 minutes, the scheduler holding 18 finished leaves). So
    this waits for the leaves to finish and raises the first one's error, fetching no data.
    """

    def wait_until_finish(self, duration=None) -> str:
        import dask.distributed as ddist

        try:
            timeout = duration / 1000 if duration is not None else None  # milliseconds
            try:
                ddist.wait(self.futures, timeout=timeout)  # raises if one was cancelled
            except TimeoutError:
                return self._state  # still running, as Beam's contract has it
            # Only an error fails: a leaf whose worker died after it finished is "lost",
            # its writes done; asking for its result would compute it (and write) again.
            failed = next((f for f in self.futures if f.status == "error"), None)
            if failed is not None:
                failed.result()  # raises the worker's exception
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            if self._state in (PipelineState.DONE, PipelineState.FAILED):
                self.client.close()
        return self._state


def _client(ddist, dask_options: dict):
    """A client of the cluster the options name, or of a LocalCluster started here, whose
    workers leave Ctrl-C to the run (pipelines/dask_worker_setup.py)."""
    if dask_options.get("address") or dask_options.get("scheduler_file"):
        return ddist.Client(**dask_options)
    return ddist.Client(**dask_options, preload=["pipelines.dask_worker_setup"])


class DaskRunner(stock.DaskRunner):
    """Executes a pipeline on a Dask distributed cluster (see the module docstring)."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist

        dask_options = options.view_as(stock.DaskOptions).get_all_options(
            drop_default=True, current_only=True
        )
        # One element per partition unless told otherwise: a Create here lists row groups
        # (few, each a lot of work), so each becomes a task a worker can take.
        bag_kwargs = stock.DaskOptions._extract_bag_kwargs(dask_options) or {"partition_size": 1}
        # The cluster's own comings and goings (scheduler, nannies, workers, clients: ~30
        # lines a run, at info) would bury the run's progress lines; its warnings stay.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        client = _client(ddist, dask_options)
        pipeline.replace_all(dask_overrides())
        translator = _Translator(bag_kwargs)
        pipeline.visit(translator)
        # Not optimised: fusing would copy a task shared by two consumers into both, and
        # a side-effecting step (a write's initialise) would then run twice.
        futures = client.compute(translator.leaves(), optimize_graph=False)
        return DaskRunnerResult(client, futures)
