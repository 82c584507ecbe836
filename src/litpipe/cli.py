"""The ``litpipe`` command line: ``validate``, ``gate``, ``predict``, ``sweep``.

Each sub-command imports what it needs only when it runs, so ``litpipe gate`` never pays for
torch and ``litpipe validate`` answers in a fraction of a second. The pipeline's stages are
not sub-commands: ``dvc.yaml`` runs ``stages/<name>.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

from litpipe.errors import LitpipeError


def validate(argv: list[str]) -> int:
    """Print the validated params as JSON, or the errors (exit 2)."""
    from litpipe.params import load_params

    parser = argparse.ArgumentParser(prog="litpipe validate",
                                     description="validate params.yaml and print it typed")
    parser.add_argument("--params", default="params.yaml", metavar="FILE",
                        help="the params file to check (default: params.yaml)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except LitpipeError as exc:
        print(f"litpipe validate: error: {exc}", file=sys.stderr)
        return 2
    print(params.model_dump_json(indent=2))
    return 0


def gate(argv: list[str]) -> int:
    """Check metrics against bounds and a git baseline (exit 0 pass, 1 fail, 2 error)."""
    from litpipe.gate.cli import main

    return main(argv)


def predict(argv: list[str]) -> int:
    """Classify image files with the trained model."""
    from litpipe.predict import main

    return main(argv)


def sweep(argv: list[str]) -> int:
    """Run an Optuna study over params.yaml, each trial a DVC experiment."""
    from litpipe.sweep.cli import main

    return main(argv)


COMMANDS = {"validate": validate, "gate": gate, "predict": predict, "sweep": sweep}
SUMMARY = "litpipe: validate params, gate metrics, classify images with the trained model"


def _parser() -> argparse.ArgumentParser:
    """The top level: the sub-commands, each with its own ``--help``, and ``--version``."""
    from litpipe import __version__

    parser = argparse.ArgumentParser(
        prog="litpipe", description=SUMMARY,
        epilog="`litpipe COMMAND --help` describes a command's options. The pipeline's "
               "stages run through `dvc repro` (dvc.yaml), not through this command.")
    parser.add_argument("--version", action="version", version=f"litpipe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, func in COMMANDS.items():
        # add_help=False: the sub-command's own parser answers its --help.
        commands.add_parser(name, help=(func.__doc__ or "").splitlines()[0], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, _ = _parser().parse_known_args(argv[:1])
        status = int(COMMANDS[args.command](argv[1:]) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe is found here, not at exit
        return status
    except BrokenPipeError:
        # The reader went away (`litpipe validate | head -1`): nothing more to say, and
        # Python must not print a traceback while flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a closed pipe


if __name__ == "__main__":
    sys.exit(main())
