"""One trial's DVC experiment in a temporary directory, safe beside other sweep workers of
the same repository: ``python -m litpipe.sweep.dvc_exp NAME TARGET KEY=VALUE ...``.

Why not ``dvc exp run --temp``: it stashes the experiment in the repository's one
temporary-directory queue, then runs *every* entry it finds there, first come first served.
Two workers of one clone then ran each other's trials: one trial's params were trained
twice, once under DVC's automatic name (``exp-cb89e``). Here the stash and the take happen
under one lock, and this process runs only the entry it took (DVC's queue drops an entry
from the stash when it is taken). The calls are those ``dvc exp run --temp`` makes
(``dvc/repo/experiments/__init__.py``: ``reproduce_one``), with DVC pinned in
requirements.lock; ``tests/e2e/test_sweep.py`` fails if they change meaning.
"""

from __future__ import annotations

import sys
from pathlib import Path

from litpipe.locks import locked

QUEUE_LOCK = Path(".litpipe/sweep-queue.lock")  # under the repository root


def run_experiment(root: Path, name: str, target: str, overrides: list[str]) -> str:
    """Run ``target`` as experiment ``name`` with ``overrides`` (``key=value``, as ``-S``
    takes them) in a temporary copy of ``root``; return the experiment's commit."""
    from dvc.repo import Repo
    from dvc.utils.cli_parse import to_path_overrides

    with Repo(str(root), _wait_for_lock=True) as repo:
        exps = repo.experiments
        queue = exps.tempdir_queue
        (root / QUEUE_LOCK).parent.mkdir(parents=True, exist_ok=True)
        with locked(root / QUEUE_LOCK):
            exps.queue_one(queue, targets=[target], params=to_path_overrides(overrides),
                           name=name)
            entry, executor = queue.get()
        results = queue._reproduce_entry(entry, executor)
        revs = [rev for result in results.values() for rev in result]
        if not revs:
            raise RuntimeError(f"experiment {name} was not committed")
        exps._log_reproduced(revs, tmp_dir=True)
        return revs[0]


def main(argv: list[str]) -> int:
    from dvc.exceptions import DvcException

    name, target, *overrides = argv
    try:
        run_experiment(Path.cwd(), name, target, overrides)
    except (DvcException, RuntimeError) as e:
        print(f"litpipe sweep: experiment {name} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
