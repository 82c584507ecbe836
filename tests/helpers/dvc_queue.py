"""Running DVC's experiment queue to the end, and what a stuck queue left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.helpers.repo import pipeline_env, run


def _queue_diagnostics(repo: Path) -> str:
    """What a stuck queue left behind: its status, and the tail of every worker's and
    experiment's log under .dvc/tmp/exps (where DVC's queue writes them)."""
    parts = [run(["dvc", "queue", "status"], repo, check=False).stdout]
    for log in sorted((repo / ".dvc/tmp/exps").rglob("*.out")):
        text = log.read_text(errors="replace")
        parts.append(f"--- {log.relative_to(repo)} (last 2000 chars)\n{text[-2000:]}")
    return "\n".join(parts)


def _kill_workers(repo: Path) -> None:
    """Kill the queue's worker processes still alive (DVC records each one's pid in
    .dvc/tmp/exps/celery/*.json, and its returncode once it has exited): an idle worker
    otherwise lingers for its monitor's timeout, and a stuck one for ever."""
    for record in (repo / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.json"):
        info = json.loads(record.read_text())
        cmdline = Path(f"/proc/{info['pid']}/cmdline")
        if info.get("returncode") is None and cmdline.exists() \
                and b"queue-worker" in cmdline.read_bytes():
            os.kill(info["pid"], signal.SIGKILL)


def run_queue(repo: Path, jobs: int = 1, env: dict[str, str] | None = None,
              deadline_s: float = 420) -> str:
    """`dvc queue start -j jobs`, then wait until nothing is queued or running; return the
    final `dvc queue status`.

    The workers are daemons that inherit the starting command's stdout, so the command's
    output goes to a file: capturing it through a pipe would block until the last worker
    exits. DVC's workers sometimes all exit with experiments still queued (DVC issue 10562);
    the documented remedy is another `dvc queue start`, done here when no worker is left.
    Past the deadline the workers are killed and the failure shows their logs, so a hang
    costs minutes of CI, not the whole budget, and says where it was.
    """
    env = env or pipeline_env()
    log = repo / ".dvc/tmp/queue-start.log"

    def start() -> None:
        with open(log, "a") as out:
            subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=env,
                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                           timeout=120, check=True)

    start()
    end = time.monotonic() + deadline_s
    restarts = idle_polls = 0
    try:
        while time.monotonic() < end:
            time.sleep(3)
            status = run(["dvc", "queue", "status"], repo).stdout
            if "Queued" not in status and "Running" not in status:
                return status
            # Workers take seconds to register: only a queue seen without one for a while
            # (DVC's idle workers wait 10 s for work before they exit) is restarted.
            stalled = "Running" not in status and "0 active, 0 idle" in status
            idle_polls = idle_polls + 1 if stalled else 0
            if idle_polls >= 5 and restarts < 3:
                restarts, idle_polls = restarts + 1, 0
                start()
        diagnostics = _queue_diagnostics(repo)
        run(["dvc", "queue", "stop", "--kill"], repo, check=False, timeout=60)
    finally:
        _kill_workers(repo)
    raise AssertionError(f"queue did not finish in {deadline_s:g} s:\n{diagnostics}")
