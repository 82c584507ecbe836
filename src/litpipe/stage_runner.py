"""Common entry for the pipeline stages: validate params first, then run, then report.

Validation happens before any heavy import (torch, lightning, mlflow), so a bad
``params.yaml`` is reported in a fraction of a second, before any output is touched.
Errors users are expected to hit (bad params, unreachable mirrors or tracking server,
missing upstream outputs) end with a one-paragraph message and exit code 2, not with a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from litpipe.config import Params, ParamsError, load_params

# stage -> "module:function"; each function takes (params) and returns a short summary.
STAGES: dict[str, str] = {
    "download": "litpipe.stages_impl:download",
    "split": "litpipe.stages_impl:split",
    "train": "litpipe.stages_impl:train",
    "evaluate": "litpipe.stages_impl:evaluate",
    "export": "litpipe.stages_impl:export",
}


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is the whole story (no traceback needed)."""
    errors: list[type[BaseException]] = [ParamsError, FileNotFoundError]
    for mod, name in (("litpipe.download", "DownloadError"),
                      ("litpipe.preprocess", "SplitError"),
                      ("litpipe.tracking", "TrackingError"),
                      ("litpipe.export", "ExportError")):
        module = sys.modules.get(mod)
        if module is not None and hasattr(module, name):
            errors.append(getattr(module, name))
    return tuple(errors)


def _resolve(target: str) -> Callable[[Params], object]:
    mod, func = target.split(":")
    return getattr(importlib.import_module(mod), func)


def run_stage(name: str, params_path: str | Path = "params.yaml") -> int:
    """Validate params, run stage ``name``, print a one-line summary; return the exit code."""
    t0 = time.perf_counter()
    try:
        params = load_params(params_path)
        result = _resolve(STAGES[name])(params)
    except KeyboardInterrupt:
        print(f"litpipe {name}: interrupted; outputs left as they were", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, _expected_errors()):
            print(f"litpipe {name}: error: {exc}", file=sys.stderr)
            return 2
        raise
    print(f"litpipe {name}: done in {time.perf_counter() - t0:.1f}s: {result}")
    return 0


def main(argv: list[str]) -> int:
    """``litpipe validate`` / ``litpipe stage NAME``."""
    parser = argparse.ArgumentParser(prog="litpipe")
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="validate params.yaml")
    v.add_argument("--params", default="params.yaml")
    s = sub.add_parser("stage", help="run one stage")
    s.add_argument("name", choices=sorted(STAGES))
    s.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    if args.cmd == "validate":
        try:
            params = load_params(args.params)
        except ParamsError as exc:
            print(f"litpipe validate: error: {exc}", file=sys.stderr)
            return 2
        print(params.model_dump_json(indent=2))
        return 0
    return run_stage(args.name, args.params)
