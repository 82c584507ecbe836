"""Learning curves as Markdown, for the CI report next to the gate's table.

A job summary (``$GITHUB_STEP_SUMMARY``) cannot show a picture from the run's own files (it
has no URL for them) nor run the JavaScript that draws ``dvc plots``; so the report gets the
curves twice: the evaluate stage's ``curves.png``, linked relative to the report (it shows
wherever the report is read beside its files: the uploaded ``reports/`` artifact, a
checkout), and the per-epoch numbers of ``train_history.csv`` as a table, readable
everywhere. Standard library only, like the rest of the gate.

``python -m litpipe.gate.curves reports/train_history.csv --image curves.png --title T``
prints the Markdown (``.ci/pipeline-check.sh`` appends it to ``reports/gate.md``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

# The columns a reviewer reads to see whether the model learned (and whether it overfits:
# train improving while validation does not); lr and grad_norm_max stay in the CSV/MLflow.
COLUMNS = ("train_loss", "val_loss", "train_acc", "val_acc")


def curves_markdown(history: Path, image: str | None, title: str) -> str:
    """A Markdown section: heading, the picture (if ``image``), the per-epoch table.

    Columns that are empty in every row (an autoencoder's accuracies) are left out. A
    missing or unreadable history is said in one line instead of failing the report.
    """
    out = [f"### {title}", ""]
    if image:
        out += [f"![{title}]({image})", ""]
    try:
        with history.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return "\n".join(out + [f"No per-epoch table: cannot read {history} ({exc}).", "", ""])
    columns = [c for c in COLUMNS if any((r.get(c) or "").strip() for r in rows)]
    if not rows or "epoch" not in rows[0] or not columns:
        return "\n".join(out + [f"No per-epoch table: {history} holds no epochs.", "", ""])
    out += ["| epoch | " + " | ".join(columns) + " |",
            "|---:|" + "---:|" * len(columns)]
    for r in rows:
        out.append(f"| {r['epoch']} | " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(out + ["", ""])


def _fmt(value: str | None) -> str:
    try:
        return f"{float(value):.4f}" if value not in (None, "") else "—"
    except ValueError:
        return str(value)


def main(argv: list[str]) -> int:
    """Print the Markdown section for ``argv``'s history file; always exit 0 if it printed."""
    parser = argparse.ArgumentParser(prog="python -m litpipe.gate.curves",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("history", type=Path, help="train_history.csv")
    parser.add_argument("--image", help="picture of the curves, relative to the report")
    parser.add_argument("--title", default="Learning curves", help="the section heading")
    args = parser.parse_args(argv)
    sys.stdout.write(curves_markdown(args.history, args.image, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
