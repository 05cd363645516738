"""`signals bench`: the scaling benchmark of the central run (flows/bench.py).

    signals bench --persons 100000,1000000            figures per stage, floor, ratios
    signals bench --persons 100000 --work /tmp/b      keep (and reuse) the populations
    signals bench --persons 20000 --prefect           also the whole Prefect flow
    signals bench --repeat 3                          three turns each, the middle reported

Registered in flows/cli.py COMMAND_MODULES.
"""

from __future__ import annotations

from pathlib import Path


def _sizes(value: str) -> list[int]:
    import argparse

    try:
        sizes = [int(v.replace("_", "")) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give sizes like 100000,1000000") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: sizes must be positive whole numbers")
    return sorted(set(sizes))


def _turns(value: str) -> int:
    import argparse

    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a whole number of turns, 1 or more")
    return int(value)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time the central run per stage at several population sizes, against DuckDB",
    )
    p.add_argument(
        "--persons",
        type=_sizes,
        default=[100_000, 1_000_000],
        help="population sizes, comma-separated (default 100000,1000000)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--buckets", type=int, default=256, help="the most join buckets (default 256)")
    p.add_argument("--runner", default="DirectRunner", help="Beam runner (default DirectRunner)")
    p.add_argument(
        "--runner-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="a Beam flag for the runner, e.g. --runner-arg=--dask_client_address=tcp://h:8786",
    )
    p.add_argument("--work", help="keep the populations here (reused when present)")
    p.add_argument("--no-floor", dest="floor", action="store_false", help="skip DuckDB")
    p.add_argument("--no-startup", dest="startup", action="store_false", help="skip 1k start-up")
    p.add_argument(
        "--prefect", action="store_true", help="also run the whole Prefect flow (largest size)"
    )
    p.add_argument(
        "--repeat",
        type=_turns,
        default=1,
        help="run the central run and the floor this many times at each size, in turn, and "
        "report the middle one (default 1); on a shared machine one run can fall on a busy moment",
    )
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from flows.bench import run_bench

    run_bench(
        args.persons,
        work=Path(args.work) if args.work else None,
        seed=args.seed,
        buckets=args.buckets,
        runner=args.runner,
        runner_args=args.runner_arg,
        floor=args.floor,
        prefect=args.prefect,
        startup=args.startup,
        json_path=Path(args.json) if args.json else None,
        repeat=args.repeat,
    )
    return 0
