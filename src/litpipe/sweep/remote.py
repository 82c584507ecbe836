"""Trials' results across machines, through the git and DVC remotes: ``litpipe sweep --push
REMOTE`` sends each finished trial's experiment there, ``--pull REMOTE`` brings the best
one back to the machine that applies it.

What goes up for a trial is ``dvc exp push --run-cache REMOTE <name>`` (its git ref to the
git remote; its outputs and the run-cache entries to the default DVC remote), plus one
thing DVC leaves out: the bytes of the ``cache: false`` outputs its run-cache entries name
(``reports/train_history.csv`` and the evaluate stage's reports; they live in git, so
neither ``dvc exp push`` nor ``dvc push --run-cache`` uploads them). Without them another
clone cannot restore the entry and ``dvc repro`` trains again (scripts/push_run_cache.py
does the same for a whole repository). The git ref goes last, so a ref on the remote means
everything of its trial is there: a push that failed half-way is found and done again.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from litpipe.errors import LitpipeError


class RemoteError(LitpipeError):
    """A push to or pull from the remotes failed; the message is one line."""


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RemoteError(f"git {' '.join(args)}: {_first_line(proc.stderr)}")
    return proc.stdout


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "failed")


def exp_refs(root: Path, git_remote: str | None = None) -> dict[str, str]:
    """Experiment name -> ``ref sha`` of this clone's experiments (or ``git_remote``'s)."""
    if git_remote is None:
        out = _git(root, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps")
    else:
        out = _git(root, "ls-remote", git_remote, "refs/exps/*").replace("\t", " ")
    refs = {}
    for line in out.splitlines():
        sha, ref = line.split()
        if ref.count("/") >= 4:  # refs/exps/<2>/<38>/<name>: not refs/exps/exec/... nor stash
            refs[ref.rsplit("/", 1)[1]] = f"{ref} {sha}"
    return refs


def _entry_objs(repo: Any, root: Path, sha: str) -> set[Any]:
    """Every object of the run-cache entries that commit ``sha`` recorded: the entries
    whose outputs all have the hashes of its ``dvc.lock`` (cache: false ones included)."""
    lock = yaml.safe_load(_git(root, "show", f"{sha}:dvc.lock")) or {}
    hashes = {out.get("md5") for stage in lock.get("stages", {}).values()
              for out in stage.get("outs", [])} - {None}
    runs = Path(repo.stage_cache.cache_dir)
    entries = []
    for path in sorted(runs.glob("*/*/*")):
        entry = yaml.safe_load(path.read_text()) if path.is_file() else None
        outs = (entry or {}).get("outs") or []
        if outs and all(out.get("md5") in hashes for out in outs):
            entries.append((path.parent.name, path.name))
    objs: set[Any] = set()
    for found in repo.stage_cache.get_used_objs(entries).values():
        objs |= found
    return objs


def _has_locally(repo: Any, hash_info: Any) -> bool:
    cache = repo.cache.legacy if hash_info.name == "md5-dos2unix" else repo.cache.local
    return cache.exists(hash_info.value)


def push(root: Path, git_remote: str, name: str) -> None:
    """``dvc exp push --run-cache git_remote name`` and the entries' uncached outputs."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    local = exp_refs(root)
    if name not in local:
        raise RemoteError(f"experiment {name} is not in this clone")
    sha = local[name].split()[1]
    try:
        with Repo(str(root), _wait_for_lock=True) as repo:
            # Outputs and run-cache entries first (what `dvc exp push --run-cache` sends
            # after the ref), then the entries' uncached outputs, the git ref last.
            repo.push(revs=[sha], workspace=False, run_cache=True)
            objs = {o for o in _entry_objs(repo, root, sha) if _has_locally(repo, o)}
            with repo.lock:
                failed = repo.cloud.push(objs).failed
            if failed:
                raise RemoteError(f"{len(failed)} run-cache output(s) failed to upload")
            result = repo.experiments.push(git_remote, [name])
    except DvcException as exc:
        raise RemoteError(_first_line(str(exc))) from None
    if name not in result.get("success", []) + result.get("up_to_date", []):
        raise RemoteError(f"{git_remote} refused the ref ({', '.join(result)})")


def pull(root: Path, git_remote: str, name: str) -> None:
    """``dvc exp pull --run-cache git_remote name`` and its entries' uncached outputs, so
    that ``dvc repro`` of its params restores instead of training."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root), _wait_for_lock=True) as repo:
            repo.experiments.pull(git_remote, [name], pull_cache=True, run_cache=True)
            sha = exp_refs(root)[name].split()[1]
            with repo.lock:
                failed = repo.cloud.pull(_entry_objs(repo, root, sha)).failed
    except (DvcException, KeyError) as exc:
        raise RemoteError(f"dvc exp pull {git_remote} {name}: "
                          f"{_first_line(str(exc))}") from None
    if failed:
        raise RemoteError(f"dvc exp pull {git_remote} {name}: {len(failed)} run-cache "
                          "output(s) are not on the DVC remote")
