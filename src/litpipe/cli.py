"""``litpipe`` command line: one entry point, sub-commands imported lazily.

Each sub-command imports only what it needs, so ``litpipe gate`` never pays for torch and
``litpipe validate`` answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, help). Each module exposes ``main(argv: list[str]) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("litpipe.stage_runner", "validate params.yaml and print the typed config"),
    "stage": ("litpipe.stage_runner", "run one pipeline stage (what dvc.yaml calls)"),
    "gate": ("litpipe.gates", "check metrics against thresholds and a git baseline"),
    "predict": ("litpipe.predict", "classify PNG/JPEG files with a checkpoint or ONNX model"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="litpipe", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(
        f"{k}: {v[1]}" for k, v in sorted(COMMANDS.items())))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args, rest = parser.parse_known_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    if args.command in ("validate", "stage"):
        return int(module.main([args.command, *argv[1:]]) or 0)
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
