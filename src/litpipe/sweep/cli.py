"""``litpipe sweep``: run (or join) the study sweep.yaml describes; ``--best``,
``--apply-best``, ``--check``. sweep.yaml is validated first, before optuna or torch load."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from litpipe.errors import LitpipeError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="litpipe sweep",
        description="run an Optuna study over params.yaml, every trial a DVC experiment; "
                    "start it again (or on another machine) to add a worker",
        epilog="docs/usage.md, section Sweeps. The storage is SQLite in .litpipe/sweep.db "
               "unless $LITPIPE_SWEEP_STORAGE (e.g. a PostgreSQL URL) says otherwise.")
    parser.add_argument("--file", default="sweep.yaml", metavar="FILE",
                        help="the sweep file (default: sweep.yaml)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true",
                      help="validate the sweep file and exit")
    what.add_argument("--best", action="store_true",
                      help="print the best complete trial and its params (JSON)")
    what.add_argument("--apply-best", action="store_true",
                      help="write the best trial's params into params.yaml; `dvc repro` "
                           "then restores its outputs from the run-cache")
    args = parser.parse_args(argv)
    from litpipe.sweep.spec import load_sweep

    try:
        path = Path(args.file)
        sweep = load_sweep(path)
        if args.check:
            print(f"{path}: valid ({sweep.trials} trials over {', '.join(sweep.space)})")
            return 0
        warnings.filterwarnings("ignore", module="optuna")  # "experimental" heartbeat notes
        from litpipe.sweep import worker

        root = path.resolve().parent
        if args.best:
            trial, params = worker.best(sweep, root)
            print(json.dumps({"trial": trial.number, "value": trial.value,
                              "metric": sweep.objective.metric, "params": params,
                              "dvc_exp": trial.user_attrs.get("dvc_exp")}, indent=2))
            return 0
        if args.apply_best:
            params = worker.apply_best(sweep, root)
            print(f"litpipe sweep: wrote {', '.join(f'{k}={v!r}' for k, v in params.items())} "
                  f"into {sweep.params}; `dvc repro` restores the trial from the run-cache")
            return 0
        return worker.Worker(sweep, path, root).run()
    except LitpipeError as exc:
        print(f"litpipe sweep: error: {exc}", file=sys.stderr)
        return 2
