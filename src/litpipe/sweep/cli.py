"""``litpipe sweep``: run (or join) the study sweep.yaml describes; ``--best``,
``--apply-best``, ``--check``; ``--push``/``--pull`` a git remote (several machines).
sweep.yaml is validated first, before optuna or torch load."""

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
    parser.add_argument("--push", metavar="REMOTE",
                        help="a git remote: after each finished trial, `dvc exp push "
                             "--run-cache REMOTE <trial>` (the outputs to the default DVC "
                             "remote), so another machine can pull it")
    parser.add_argument("--pull", metavar="REMOTE",
                        help="with --best or --apply-best: pull the best trial's experiment "
                             "and run-cache from REMOTE when another machine ran it")
    args = parser.parse_args(argv)
    if args.push and (args.check or args.best or args.apply_best):
        parser.error("--push goes with running the sweep; --best/--apply-best take --pull")
    if args.pull and not (args.best or args.apply_best):
        parser.error("--pull goes with --best or --apply-best")
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
            if args.pull:
                worker.fetch(trial, root, args.pull)
            print(json.dumps({"trial": trial.number, "value": trial.value,
                              "metric": sweep.objective.metric, "params": params,
                              "dvc_exp": trial.user_attrs.get("dvc_exp")}, indent=2))
            if not args.pull and (why := worker.missing_here(trial, root)):
                print(f"litpipe sweep: {why}", file=sys.stderr)
            return 0
        if args.apply_best:
            params = worker.apply_best(sweep, root, args.pull)
            print(f"litpipe sweep: wrote {', '.join(f'{k}={v!r}' for k, v in params.items())} "
                  f"into {sweep.params}; `dvc repro` restores the trial from the run-cache")
            return 0
        return worker.Worker(sweep, path, root, args.push).run()
    except LitpipeError as exc:
        print(f"litpipe sweep: error: {exc}", file=sys.stderr)
        return 2
