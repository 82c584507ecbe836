"""Two experiments queued with ``dvc queue start -j 2`` against the same two run one after the
other: the wall times and their ratio (at most 1.1 means the cores are shared, not fought
over).

Runs in the repository it is started from (``dvc repro`` done, a clean workspace): two
``dvc exp run`` one after the other, then two more queued and started with ``-j 2``, each with
its own seed so that the run-cache restores none of them. ``--set`` adds params to all four
(for example a shorter ``trainer.max_epochs``). Prints one JSON line.

    python bench/queue_wall.py --set trainer.max_epochs=4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dvc(*args: str, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=ROOT, check=True, text=True,
                          capture_output=True, **kw)  # type: ignore[call-overload]


def kill_workers() -> None:
    """DVC's queue workers are daemons that wait for more work: end them by their pids."""
    for info in (ROOT / ".dvc/tmp/exps/celery").glob("*.json"):
        try:
            pid = int(json.loads(info.read_text()).get("pid", 0))
            if pid:
                os.kill(pid, signal.SIGTERM)
        except (ValueError, ProcessLookupError, PermissionError, OSError):
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run")
    ap.add_argument("--seed", type=int, default=1000, help="first of the four seeds")
    args = ap.parse_args()
    sets = [x for kv in args.set for x in ("-S", kv)]
    seeds = [args.seed + i for i in range(4)]

    t0 = time.perf_counter()
    for seed in seeds[:2]:
        dvc("exp", "run", *sets, "-S", f"seed={seed}")
    sequential = time.perf_counter() - t0

    for seed in seeds[2:]:
        dvc("exp", "run", "--queue", *sets, "-S", f"seed={seed}")
    log = open(ROOT / ".dvc/tmp/queue-bench.log", "a")  # noqa: SIM115 (the daemons inherit it)
    t0 = time.perf_counter()
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=ROOT, stdin=subprocess.DEVNULL,
                   stdout=log, stderr=subprocess.STDOUT, check=True)
    try:
        while True:
            time.sleep(2)
            status = dvc("queue", "status").stdout
            if "Queued" not in status and "Running" not in status:
                break
        queued = time.perf_counter() - t0
    finally:
        kill_workers()
        log.close()
    print(json.dumps({"sequential_s": round(sequential, 1), "queued_j2_s": round(queued, 1),
                      "queued_over_sequential": round(queued / sequential, 3),
                      "status": status.strip().splitlines()[-3:]}))


if __name__ == "__main__":
    main()
