"""Promotion's provenance rule: ``champion`` only ever names a model of a commit.

``litpipe gate --promote`` once moved ``champion`` to a model trained by ``dvc exp run`` and
applied to the workspace, never committed (params.yaml and dvc.lock modified): nothing in
git said how it was made. Two checks, both before the registry is read or written:

* **The workspace is the commit** (:func:`check_workspace_clean`): no tracked file differs
  from HEAD (params.yaml, dvc.yaml, dvc.lock, src/, stages/, the committed reports: all of
  them), and no untracked file sits under ``src/`` or ``stages/``, where an import would
  pick it up. Other untracked files do not count: they are not part of what a stage reads
  (DVC's own new ``.gitignore`` files, a first ``dvc.lock``, CI's ``reports/gate.md``, a
  note), and refusing for them would only teach people to delete things.
* **The run was trained from that commit** (:func:`check_run_commit`): the run's commit tag
  (litpipe's ``git.commit``, else MLflow's ``mlflow.source.git.commit``) is HEAD, and its
  ``git.dirty`` tag says it was trained without uncommitted changes.

One relaxation, because DVC's own flow needs it: results are committed *after* training
(``dvc repro``, then ``git commit dvc.lock reports/``), and CI promotes on that push, with
``models/run.json`` from ``dvc pull``; a README fix may follow. The run's commit is then an
ancestor of HEAD, not HEAD. So HEAD may differ from the run's commit anywhere but in what
the pipeline reads (:data:`PIPELINE_READS`: its definition, params, stage entries, the
package, the pinned dependencies, the data references): those must be byte for byte the
ones the run was trained from. (Refusing a docs-only commit would leave the user stuck:
``dvc repro`` sees nothing to retrain.)
"""

from __future__ import annotations

from pathlib import Path

from litpipe.errors import LitpipeError
from litpipe.repo import git_output

CODE_DIRS = ("src", "stages")  # where an untracked file can change what a stage runs
COMMIT_TAGS = ("git.commit", "mlflow.source.git.commit")  # litpipe's first, then MLflow's
SHOWN = 5  # file names a one-line refusal lists before "and N more"
# What decides the trained model's bytes, as git pathspecs from the repository's top.
PIPELINE_READS = (":(top)dvc.yaml", ":(top)params.yaml", ":(top)stages", ":(top)src",
                  ":(top)pyproject.toml", ":(top)requirements.lock", ":(top,glob)**/*.dvc")


class ProvenanceError(LitpipeError):
    """The model to promote is not known to be the committed one; says which files or
    commits differ."""


def _names(files: list[str]) -> str:
    shown = ", ".join(files[:SHOWN])
    return shown + (f" and {len(files) - SHOWN} more" if len(files) > SHOWN else "")


def _short(commit: str) -> str:
    return commit[:12]


def head_commit(repo: Path) -> str:
    """HEAD's full hash; a ProvenanceError when ``repo`` is not in a git repository."""
    head = git_output(repo, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    if not head:
        raise ProvenanceError(
            f"{repo.resolve()} is not a git repository with a commit (or git is missing): "
            "only a committed model can be promoted")
    return head


def uncommitted_files(repo: Path) -> list[str]:
    """Tracked files that differ from HEAD (staged or not, deleted included), then untracked,
    not ignored files under :data:`CODE_DIRS`; paths from the repository's top."""
    changed = git_output(repo, "diff", "--name-only", "HEAD", "--", ":/")
    untracked = git_output(repo, "ls-files", "--others", "--exclude-standard", "--full-name",
                           "--", *(f":/{d}" for d in CODE_DIRS))
    if changed is None or untracked is None:
        raise ProvenanceError(f"git could not list the changes in {repo.resolve()}")
    return [*changed.splitlines(), *(f"{name} (untracked)" for name in untracked.splitlines())]


def check_workspace_clean(repo: Path) -> str:
    """Raise a one-line ProvenanceError naming what is uncommitted; return HEAD's hash."""
    head = head_commit(repo)
    dirty = uncommitted_files(repo)
    if dirty:
        raise ProvenanceError(
            f"the workspace has uncommitted changes ({_names(dirty)}) on top of commit "
            f"{_short(head)}: only a committed model can be promoted; commit them (then "
            "`dvc repro`, commit its results and promote that commit) or discard them")
    return head


def check_run_commit(repo: Path, head: str, run_id: str, tags: dict[str, str]) -> None:
    """Raise a one-line ProvenanceError unless run ``run_id`` (its ``tags``) was trained
    from commit ``head``, or from one that differs from it in nothing the pipeline reads."""
    commit = next((tags[t] for t in COMMIT_TAGS if tags.get(t)), None)
    if commit is None:
        raise ProvenanceError(
            f"run {run_id} has no git commit tag ({' or '.join(COMMIT_TAGS)}), so nothing says "
            f"it was trained from commit {_short(head)}; rerun `dvc repro` on it")
    dirty = tags.get("git.dirty")
    if dirty != "false":
        what = (f"with uncommitted changes ({tags.get('git.dirty.files') or 'unnamed'})"
                if dirty == "true" else "without a git.dirty tag to say it was clean")
        raise ProvenanceError(
            f"run {run_id} was trained from commit {_short(commit)} {what}, not from a "
            "commit; commit the changes, retrain (`dvc repro -f -s train; dvc repro`) and "
            "commit the results")
    if commit == head:
        return
    if not git_output(repo, "rev-parse", "--verify", "-q", f"{commit}^{{commit}}"):
        raise ProvenanceError(
            f"run {run_id} was trained from commit {_short(commit)}, which this clone lacks "
            f"(HEAD is {_short(head)}); fetch the history (`git fetch --unshallow`)")
    differ = git_output(repo, "diff", "--name-only", commit, head, "--", *PIPELINE_READS)
    if differ is None:
        raise ProvenanceError(f"git could not compare commits {_short(commit)} and "
                              f"{_short(head)} in {repo.resolve()}")
    if differ.strip():
        raise ProvenanceError(
            f"run {run_id} was trained from commit {_short(commit)}, not from HEAD "
            f"{_short(head)} (they differ in {_names(differ.splitlines())}); retrain on "
            "this commit (`dvc repro`) and commit its results")
