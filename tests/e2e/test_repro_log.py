"""What a person reads after `dvc repro` (issue 22): in a log, one line per epoch and no
third-party chatter; on a terminal, a live bar that leaves litpipe's lines intact.

The pipeline runs once (module fixture) on the digits with the progress bar on, as
params.yaml has it, and with the warnings a user sees: ``pipeline_env()`` ignores every
warning (``PYTHONWARNINGS=ignore``) for the other tests, which would hide what this one is
about.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.helpers.repo import configure_tiny_digits, edit_params, make_repo_copy, pipeline_env
from tests.helpers.repo import run as run_in

pytestmark = pytest.mark.e2e

EPOCHS = 2  # TINY_DIGITS' trainer.max_epochs
EPOCH_LINE = re.compile(r"^litpipe train: epoch (\d+)/(\d+): ")
# What the issue found in the log, and what would come back with it.
CHATTER = {
    "Tip": "Lightning's litlogger advertisement",
    "GPU available": "Lightning's device report",
    "TPU available": "Lightning's device report",
    "was configured so": "Lightning's note on limit_*_batches=1.0",
    "Trainable params": "Lightning's model summary table",
    "Seed set to": "Lightning's seed line",
    "Add type hints to the `predict` method": "MLflow's pyfunc type-hint warning",
    "Inferred schema contains integer column": "MLflow's integer-column hint",
    "Downloading artifacts": "MLflow's artifact download bar",
    "to estimate number of stepping batches": "Lightning's stepping-batches note",
}
# A Python warning ("file.py:12: ..." or "UserWarning: ...") or a tqdm bar ("| 3/20 [").
WARNING_OR_BAR = re.compile(r"\.py:\d+: |\w+Warning: |\d+%\||\| *\d+/[\d?]+ \[")


def user_env() -> dict[str, str]:
    """The pipeline's environment with Python's default warning filters, as a user has."""
    env = pipeline_env()
    env.pop("PYTHONWARNINGS", None)
    return env


@pytest.fixture(scope="module")
def repro(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(repository copy, the log of its `dvc repro` with stdout and stderr to a file)."""
    repo = make_repo_copy(tmp_path_factory.mktemp("repro-log") / "repo")
    configure_tiny_digits(repo)
    edit_params(repo / "params.yaml", {"trainer.enable_progress_bar": True})
    run_in(["git", "commit", "-qam", "progress bar on, as params.yaml has it"], repo)
    log = repo.parent / "repro.log"
    with log.open("wb") as out:
        proc = subprocess.run(["dvc", "repro"], cwd=repo, env=user_env(), stdout=out,
                              stderr=subprocess.STDOUT, timeout=600)
    text = log.read_bytes().decode()
    assert proc.returncode == 0, text[-4000:]
    return repo, text


def test_log_has_no_control_codes_and_no_chatter(repro: tuple[Path, str]) -> None:
    _, text = repro
    assert "\x1b" not in text and "\r" not in text, "escape codes or carriage returns"
    lines = text.splitlines()
    for line in lines:
        assert not re.search(r"deprecat", line, re.I), line
        assert not WARNING_OR_BAR.search(line), line
        for needle, what in CHATTER.items():
            assert needle not in line, f"{what}: {line}"
        # A litpipe line starts its line: nothing (a bar, a warning) was glued before it.
        if "litpipe " in line:
            assert line.startswith("litpipe "), f"glued line: {line}"
    # The stages still say what they did.
    for name in ("validate", "download", "split", "train", "evaluate", "export"):
        assert sum(line.startswith(f"litpipe {name}: done in ") for line in lines) == 1, name


def test_log_has_one_line_per_epoch(repro: tuple[Path, str]) -> None:
    _, text = repro
    epochs = [EPOCH_LINE.match(line) for line in text.splitlines()
              if "litpipe train: epoch" in line]
    assert all(epochs), "an epoch line that does not start its line"
    assert [(int(m[1]), int(m[2])) for m in epochs] == [(n, EPOCHS)
                                                         for n in range(1, EPOCHS + 1)]


def _on_terminal(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run ``cmd`` on a pseudo-terminal 120 columns wide (tqdm draws nothing in 0); return
    its exit status and raw output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.chdir(cwd)
            os.execvpe(cmd[0], cmd, env)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw`` (carriage returns, cursor-up, erase line)."""
    lines, row, col = [""], 0, 0
    for tok in re.findall(r"\x1b\[\d*[A-Za-z]|\r|\n|[^\r\n\x1b]+|\x1b", raw):
        if tok == "\r":
            col = 0
        elif tok == "\n":
            row += 1
            lines += [""] * (row + 1 - len(lines))
        elif tok.startswith("\x1b[") and tok[-1] == "A":
            row = max(0, row - int(tok[2:-1] or 1))
        elif tok.startswith("\x1b[") and tok[-1] == "K":
            lines[row] = lines[row][:col]
        elif not tok.startswith("\x1b"):
            line = lines[row].ljust(col)
            lines[row] = line[:col] + tok + line[col + len(tok):]
            col += len(tok)
    return [line.rstrip() for line in lines]


def test_terminal_shows_a_live_bar_and_whole_epoch_lines(repro: tuple[Path, str]) -> None:
    repo, _ = repro
    status, raw = _on_terminal([sys.executable, "stages/train.py"], repo, user_env())
    assert status == 0, raw[-4000:]
    assert re.search(r"Epoch 0: +\d+%\|.*\| 1/\d+ \[", raw), "no bar counting batches"
    screen = _screen(raw)
    epochs = [line for line in screen if "litpipe train: epoch" in line]
    assert len(epochs) == EPOCHS and all(EPOCH_LINE.match(line) for line in epochs), screen
