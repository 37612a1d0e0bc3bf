"""`python -m bench.clinic_day`: the day on each backend, printed and reported."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import bench.clinic_day
from bench.clinic_day.day import run_day
from bench.clinic_day.records import DayPlan
from bench.clinic_day.report import print_run, report


def main(argv: list[str] | None = None) -> int:
    """Run the day on each backend, print and report it; non-zero if an invariant broke."""
    parser = argparse.ArgumentParser(prog="python -m bench.clinic_day",
                                     description=(bench.clinic_day.__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--consultations", type=int, default=150)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seed", type=int, default=1405)
    parser.add_argument("--out", type=Path, default=Path("bench-report"))
    parser.add_argument("--practices", type=int, default=1, choices=range(1, 100),
                        metavar="1..99",
                        help="practices on the line (platform mode): callers spread over "
                             "their numbers, consultations over their doctors")
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    runs = []
    for backend in backends:
        plan = DayPlan(backend, args.minutes, args.calls, args.consultations, args.seed,
                       practices=args.practices)
        run = asyncio.run(run_day(plan))
        print_run(run)
        runs.append(run)
    print(f"report: {report(runs, args.out)}")
    return 0 if all(i.violations == 0 for run in runs for i in run.invariants) else 1


if __name__ == "__main__":
    raise SystemExit(main())
