"""What Beam alone costs to start a run on this machine: the part of our start-up no code of
ours can take off.

Each turn is a fresh Python process that imports Beam and runs a graph that does nothing:
one Create, then `--shuffles` GroupByKeys, on the DirectRunner with two threads as the
central run uses on two cores. With 8 shuffles the runner executes 10 fused stages, as
many as the central graph does on the bench's 1,000-person start-up population. The
figures are Beam's fixed cost per run, to set beside `signals bench`'s fixed start-up
(docs/scaling.md, "Time per person").

    .venv/bin/python benchmarks/beam_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
t1 = time.perf_counter()
p = beam.Pipeline(options=PipelineOptions([
    "--runner=DirectRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2",
]))
items = p | beam.Create(list(range(8)))
for i in range({shuffles}):
    items = (items | f"key{{i}}" >> beam.Map(lambda x: (x % 4, x))
             | f"group{{i}}" >> beam.GroupByKey()
             | f"values{{i}}" >> beam.FlatMap(lambda kv: kv[1]))
t2 = time.perf_counter()
p.run().wait_until_finish()
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "build": t2 - t1, "run": t3 - t2, "total": t3 - t0}}))
"""


def turn(shuffles: int) -> dict:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(shuffles=shuffles)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    figures["process"] = time.perf_counter() - start  # with Python's own start
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shuffles", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    turns = [turn(args.shuffles) for _ in range(args.repeat)]
    print(f"a Beam graph doing nothing, {args.shuffles} shuffles, {args.repeat} turns (seconds):")
    for key in ("import", "build", "run", "total", "process"):
        values = sorted(t[key] for t in turns)
        print(
            f"  {key:<8} median {statistics.median(values):5.2f}   "
            f"least {values[0]:5.2f}   most {values[-1]:5.2f}"
        )
    print("  (total: in the process, as the bench times a phase; process: with Python's start)")


if __name__ == "__main__":
    main()
