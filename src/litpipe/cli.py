"""``litpipe``: the command line (``validate``, ``gate``, ``predict``).

Each sub-command imports what it needs only when it runs, so ``litpipe gate`` never pays for
torch and ``litpipe validate`` answers in a fraction of a second. The pipeline's stages are
not sub-commands: ``dvc.yaml`` runs ``stages/<name>.py``.
"""

from __future__ import annotations

import argparse
import sys

from litpipe.errors import LitpipeError


def validate(argv: list[str]) -> int:
    """Print the validated params as JSON, or the errors (exit 2)."""
    from litpipe.params import load_params

    parser = argparse.ArgumentParser(prog="litpipe validate",
                                     description="validate params.yaml and print it typed")
    parser.add_argument("--params", default="params.yaml")
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


COMMANDS = {"validate": validate, "gate": gate, "predict": predict}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="litpipe", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(
        f"{name}: {func.__doc__.splitlines()[0]}" for name, func in sorted(COMMANDS.items())))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    return int(COMMANDS[args.command](argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
