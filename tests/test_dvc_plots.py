"""`dvc plots show` / `dvc plots diff main` draw what dvc.yaml's `plots:` define.

No training is needed to check that: the report files are written here in the formats the
train and evaluate stages write (train_history.csv with HISTORY_FIELDS, confusion.csv with
one row per test sample, a PNG), in a throw-away git + DVC repository holding the real
dvc.yaml, and DVC's own `--json` output is read back: which plots it draws, from which
columns, with which titles and axis labels, and for which revisions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from litpipe.training.callbacks import HISTORY_FIELDS
from tests.helpers.repo import ROOT, run

# The plots a user should see, and the columns each one draws.
EXPECTED = {
    "Loss": {"train_loss", "val_loss"},
    "Accuracy": {"train_acc", "val_acc"},
    "reports/train_history.csv": {"lr"},  # the train stage's own plot: the schedule
    "reports/confusion.csv": None,  # one row per sample: drawn as counts, no y "field"
    "reports/samples.png": None,
    "reports/confusion.png": None,
    "reports/curves.png": None,
}
IMAGES = ("reports/samples.png", "reports/confusion.png", "reports/curves.png")
# A 1×1 grey PNG: DVC copies images as they are, it does not decode them.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
                    "0000000a4944415478da63680000008200816c6a1d7b0000000049454e44ae426082")


def write_reports(repo: Path, epochs: int, *, accuracy: bool = True,
                  confusion: list[tuple[str, str]] | None = None) -> None:
    """reports/ as the stages write them; ``accuracy=False``: a reconstruction model's
    history (its accuracy columns are empty) and a confusion.csv without rows."""
    reports = repo / "reports"
    reports.mkdir(exist_ok=True)
    lines = [",".join(HISTORY_FIELDS)]
    for e in range(epochs):
        row = {"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 1.1 / (e + 1),
               "train_acc": 0.5 + 0.04 * e if accuracy else "",
               "val_acc": 0.48 + 0.04 * e if accuracy else "",
               "lr": 0.001, "grad_norm_max": 2.0}
        lines.append(",".join(str(row[f]) for f in HISTORY_FIELDS))
    (reports / "train_history.csv").write_text("\n".join(lines) + "\n")
    pairs = confusion if confusion is not None else []
    (reports / "confusion.csv").write_text(
        "actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in pairs))
    for image in IMAGES:
        (repo / image).write_bytes(PNG)


@pytest.fixture
def plots_repo(tmp_path: Path) -> Path:
    """A git repository on branch main with the real dvc.yaml and no other project file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    return repo


def plots_json(repo: Path, *args: str) -> dict[str, Any]:
    """``dvc plots <args> --json``, images copied under ``repo/out`` (not the work tree)."""
    proc = run(["dvc", "plots", *args, "--json", "-o", str(repo.parent / "out")], repo)
    return json.loads(proc.stdout)


def summary(plots: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per plot id: its type, revisions, title, axis labels and the y columns it draws."""
    out: dict[str, dict[str, Any]] = {}
    for name, renders in plots["data"].items():
        if not renders:  # nothing to draw in any revision (an empty confusion.csv)
            out[name] = {"type": None, "revisions": []}
            continue
        # Images come as one render per revision; data plots as one render of them all.
        assert len({r["type"] for r in renders}) == 1, (name, renders)
        assert renders[0]["type"] == "image" or len(renders) == 1, (name, renders)
        r = renders[0]
        info: dict[str, Any] = {"type": r["type"], "revisions": sorted(
            rev for x in renders for rev in x["revisions"])}
        content = r.get("content")
        if isinstance(content, dict):
            text = json.dumps(content)
            info["title"] = content["title"]["text"]
            info["fields"] = {v["field"] for v in content["data"]["values"] if "field" in v}
            info["values"] = content["data"]["values"]
            info["text"] = text
        out[name] = info
    return out


def test_plots_show_draws_loss_accuracy_confusion_and_samples(plots_repo: Path) -> None:
    write_reports(plots_repo, epochs=3, confusion=[("Bag", "Bag"), ("Bag", "Shirt"),
                                                   ("Shirt", "Shirt")])
    plots = plots_json(plots_repo, "show")
    assert not plots.get("errors"), plots["errors"]
    shown = summary(plots)
    # Each file is drawn once, as defined: no extra plot of a whole CSV with DVC's defaults.
    assert set(shown) == set(EXPECTED)
    for name in ("Loss", "Accuracy"):
        assert shown[name]["fields"] == EXPECTED[name], name
        # x is the epoch column, and every epoch of both series is drawn.
        assert sorted({v["epoch"] for v in shown[name]["values"]}) == ["0", "1", "2"]
        assert len(shown[name]["values"]) == 3 * 2
        assert '"field": "epoch"' in shown[name]["text"]
    assert shown["Loss"]["title"] == "Loss by epoch: train vs validation"
    assert shown["Accuracy"]["title"] == "Accuracy by epoch: train vs validation"
    assert '"title": "accuracy"' in shown["Accuracy"]["text"]  # the y axis label
    assert '"title": "epoch (from 0)"' in shown["Loss"]["text"]  # the x axis label
    assert '"field": "lr"' in shown["reports/train_history.csv"]["text"]  # y: the schedule
    confusion = shown["reports/confusion.csv"]
    assert '"groupby": ["actual", "predicted"]' in confusion["text"]  # the confusion template
    assert len(confusion["values"]) == 3  # one row per test sample
    for image in IMAGES:
        assert shown[image]["type"] == "image", image


def test_plots_diff_main_draws_both_revisions(plots_repo: Path) -> None:
    """`dvc plots diff main`: the committed curves and the work tree's, one line each."""
    write_reports(plots_repo, epochs=2, confusion=[("0", "0")])
    run(["git", "add", "-A"], plots_repo)
    run(["git", "commit", "-qm", "baseline reports"], plots_repo)
    write_reports(plots_repo, epochs=4, confusion=[("0", "1")])
    shown = summary(plots_json(plots_repo, "diff", "main"))
    assert set(shown) == set(EXPECTED)
    for name in EXPECTED:
        assert shown[name]["revisions"] == ["main", "workspace"], name
    epochs = {(v["rev"], v["epoch"]) for v in shown["Loss"]["values"]}
    assert epochs == {("main", "0"), ("main", "1")} | {("workspace", str(e)) for e in range(4)}


def test_a_reconstruction_models_reports_do_not_break_plots_show(plots_repo: Path) -> None:
    """An autoencoder's history has empty accuracy columns and its confusion.csv no rows:
    `dvc plots show` still succeeds, with the loss curves drawn and no error reported."""
    write_reports(plots_repo, epochs=2, accuracy=False)
    proc = run(["dvc", "plots", "show", "-o", str(plots_repo.parent / "html")], plots_repo,
               check=False)
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr
    assert (plots_repo.parent / "html/index.html").is_file()
    plots = plots_json(plots_repo, "show")
    assert not plots.get("errors"), plots["errors"]
    shown = summary(plots)
    assert shown["Loss"]["fields"] == {"train_loss", "val_loss"}
    assert shown["reports/confusion.csv"]["revisions"] == []  # nothing to draw, and no error
    assert "WARNING" not in proc.stderr, proc.stderr
