"""``litpipe gate --promote``: move the registry alias ``champion`` to the model just gated.

Promotion is part of the gate, not a command of its own, so that it can only follow a
verdict reached in the same process: a failing or unevaluable gate never gets here, and no
script can promote by mistake after ignoring an exit code.

Four conditions, all checked here or in :mod:`litpipe.gate.cli`:

* **The gate passed** (cli).
* **On the default branch**: the branch the gate compares with (``--baseline`` or
  ``gates.baseline``, e.g. ``main``). The current branch is ``--branch NAME`` when given,
  else the CI's (``GITHUB_REF_NAME`` on GitHub Actions, where a pull request's is
  ``<n>/merge``; ``CI_COMMIT_BRANCH`` on GitLab, unset for merge requests), else git's
  (``git symbolic-ref``; a detached HEAD is on no branch, so it never promotes).
* **The version is the gated model's**: the one registered from ``models/run.json``'s run,
  found by run id, never "the newest". If that run registered several (``dvc repro
  export`` rerun with other export params), the one holding the work tree's
  ``models/export/model.onnx`` (by its SHA-256 tag) is chosen. And the metrics the gate
  read must be the ones that run logged, so a stale ``reports/metrics.json`` cannot vouch
  for another model.
* **The model is the commit's**: the workspace is committed and the run was trained from
  that commit (:mod:`litpipe.gate.provenance`), checked before the registry is read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from litpipe.errors import LitpipeError
from litpipe.repo import MODELS, git_output


class PromotionError(LitpipeError):
    """The model cannot be promoted; the message names the file, store or version."""


@dataclass(frozen=True)
class Branch:
    """Where the gate runs: a branch name (None: detached HEAD, no branch) and whence."""

    name: str | None
    source: str


def current_branch(repo: Path, explicit: str | None = None) -> Branch:
    """The branch being gated: ``explicit``, else the CI's, else git's (see module doc)."""
    if explicit:
        return Branch(explicit, "--branch")
    if os.environ.get("GITHUB_ACTIONS") == "true" and os.environ.get("GITHUB_REF_NAME"):
        if os.environ.get("GITHUB_REF_TYPE", "branch") != "branch":
            return Branch(None, f"GITHUB_REF_TYPE={os.environ['GITHUB_REF_TYPE']}")
        return Branch(os.environ["GITHUB_REF_NAME"], "GITHUB_REF_NAME")
    if os.environ.get("CI_COMMIT_BRANCH"):
        return Branch(os.environ["CI_COMMIT_BRANCH"], "CI_COMMIT_BRANCH")
    name = git_output(repo, "symbolic-ref", "--short", "-q", "HEAD")
    return Branch(name or None, "git")


def branch_of(repo: Path, rev: str) -> str:
    """The branch name a baseline revision stands for: ``origin/main`` and
    ``refs/heads/main`` are ``main`` (a remote's name is stripped only for a remote this
    repository has)."""
    for prefix in ("refs/heads/", "refs/remotes/"):
        if rev.startswith(prefix):
            rev = rev[len(prefix):]
            if prefix == "refs/heads/":
                return rev
            break
    remotes = (git_output(repo, "remote") or "").split()
    head, _, rest = rev.partition("/")
    return rest if rest and head in remotes else rev


def check_metrics_are_the_runs(gated: dict[str, float], logged: dict[str, float],
                               run_id: str) -> None:
    """The gated metrics (metric → value the gate read) must be what ``run_id`` logged.

    Only the names both sides have are compared (the run logs ``test_acc``, metrics.json
    may nest ``per_class_acc``); none in common means nothing vouches for the run.
    """
    common = sorted(set(gated) & set(logged))
    if not common:
        raise PromotionError(
            f"run {run_id} logged none of the gated metrics ({', '.join(sorted(gated))}), so "
            "the gate did not judge its model; rerun `dvc repro` (evaluate logs them)")
    for name in common:
        # metrics.json keeps 6 decimals (evaluate rounds it); the run keeps every digit.
        if not math.isclose(gated[name], logged[name], rel_tol=1e-9, abs_tol=1e-6):
            raise PromotionError(
                f"the gated {name} = {gated[name]:g} is not what run {run_id} logged "
                f"({logged[name]:g}): reports/ and models/run.json come from different runs; "
                "rerun `dvc repro` (or `dvc pull`) so they match")


def promote(repo: Path, registered_model: str, gated: dict[str, float]) -> str:
    """Point ``champion`` at the version of ``registered_model`` trained by the run of
    ``repo/models/run.json``; return a line saying what was promoted.

    Raises :class:`PromotionError`, a provenance or a tracking error naming what is missing
    or differs: uncommitted files, the run's commit, the run file, the store, the run's
    version, or a metric disagreement.
    """
    from litpipe.gate.provenance import check_run_commit, check_workspace_clean
    from litpipe.tracking import models, store
    from litpipe.tracking.client import tracking_error
    from litpipe.tracking.run import TrackedRun, read_run_file

    head = check_workspace_clean(repo)  # git alone: nothing in any store is read before
    run_json = repo / MODELS / "run.json"
    uri, run_id = read_run_file(run_json)
    store.check_existing_store(uri)
    try:  # one read for the run's tags (its commit) and its metrics
        data = TrackedRun(uri, run_id).client.get_run(run_id).data
    except Exception as exc:
        raise tracking_error(uri, f"could not read run {run_id}", exc) from None
    check_run_commit(repo, head, run_id, dict(data.tags))
    check_metrics_are_the_runs(gated, dict(data.metrics), run_id)
    versions = models.versions_of_run(registered_model, run_id, uri)
    if not versions:
        raise PromotionError(
            f"no version of {registered_model!r} was registered from run {run_id} (named by "
            f"{run_json}) in {uri}; run `dvc repro export` first")
    onnx = repo / MODELS / "export" / "model.onnx"
    numbers = ", ".join(v.version for v, _ in versions)
    if onnx.is_file():
        digest = models.file_sha256(onnx)
        matching = [v for v, sha in versions if sha == digest]
        if not matching:
            raise PromotionError(
                f"{onnx}: none of the versions run {run_id} registered ({numbers}) holds this "
                "export; rerun `dvc repro export` to register it")
        chosen = matching[-1]  # identical files: the latest registration of the same bytes
    elif len(versions) == 1:
        chosen = versions[0][0]
    else:
        raise PromotionError(
            f"run {run_id} registered versions {numbers} of {registered_model!r} and {onnx} "
            "is missing to tell which is this model; `dvc pull` or `dvc repro export` first")
    previous = _champion(registered_model, uri)
    models.set_alias(chosen, models.CHAMPION, uri)
    was = f" (was version {previous})" if previous and previous != chosen.version else ""
    return f"promoted {chosen} (run {run_id}) to @{models.CHAMPION}{was} in {uri}"


def _champion(name: str, uri: str) -> str | None:
    """The version ``champion`` points at now, or None."""
    from litpipe.tracking import models

    try:
        return models.resolve(f"models:/{name}@{models.CHAMPION}", uri).version
    except models.RegistryError:
        return None
