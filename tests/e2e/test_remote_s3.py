"""A team's DVC remote on S3-compatible storage: push, clone, pull, run-cache, experiments.

The way teams share DVC outputs: one bucket (MinIO on-prem, or AWS S3) as the default remote,
its endpoint in the committed `.dvc/config`, credentials from each person's environment or
their uncommitted `.dvc/config.local`. Here the bucket lives in moto's S3 server on 127.0.0.1
(tests/helpers/s3.py) and git's shared remote is a bare repository on disk. The "team":

- repo A trains the tiny digits config (`dvc repro`), commits, `dvc push --run-cache`s and
  pushes to the git remote;
- a fresh `git clone` gets every output with `dvc pull`, and then `dvc status` is clean and
  `dvc repro` runs nothing;
- teammate C trains other params as an experiment (`dvc exp run`) and shares it: the
  run-cache with scripts/push_run_cache.py (`dvc push --run-cache` plus the outputs its
  entries need; the script says why), the experiment with `dvc exp push`;
- teammate B sets the same params, `dvc pull --run-cache`s, and `dvc repro --pull` restores
  every stage from the run-cache instead of training (no stage runs, no new MLflow run in
  the team's tracking store);
- teammate D gets C's experiment with `dvc exp pull` (its ref through the git remote, its
  outputs through the bucket) and `dvc exp apply`s it.

Every clone shares one MLflow store (a SQLite file, standing in for the team's server), so
"no new MLflow run" is checked where a teammate would look. The times of push, pull and
restore are printed at the end of the module (a tiny model: they measure DVC's overhead).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.helpers.repo import (
    ROOT,
    configure_tiny_digits,
    edit_params,
    make_repo_copy,
    pipeline_env,
)
from tests.helpers.s3 import ACCESS_KEY, SECRET_KEY, MotoS3, with_aws, without_aws

pytestmark = pytest.mark.e2e

BUCKET = "litpipe-team"
PREFIX = "dvc-store"  # the remote is s3://litpipe-team/dvc-store
REMOTE = "team"
TRAINED_LR = 0.005  # one teammate trains it, another asks for it (params.yaml has 0.004)
EXPERIMENT = "lr-0.005"
UP_TO_DATE = "Data and pipelines are up to date."


@dataclass
class Team:
    """The shared pieces: the S3 server, the git remote, the tracking store, and repo A."""

    s3: MotoS3
    origin: Path  # bare git repository: the team's git server
    tracking_db: Path  # the team's MLflow store
    repo_a: Path
    timings: dict[str, float] = field(default_factory=dict)

    def env(self, credentials: bool = True) -> dict[str, str]:
        """A teammate's shell: the venv, the team's tracking URI, S3 keys only if asked."""
        base = {**pipeline_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{self.tracking_db}"}
        return with_aws(base) if credentials else without_aws(base)

    def clone(self, dest: Path, credentials: str = "env") -> Path:
        """A fresh `git clone` of the team's repository. ``credentials``: "env" (keys in the
        environment, see :meth:`env`) or "local" (written with `dvc remote modify --local`)."""
        sh(["git", "clone", "-q", str(self.origin), str(dest)], dest.parent, self.env())
        if credentials == "local":
            for key, value in (("access_key_id", ACCESS_KEY),
                               ("secret_access_key", SECRET_KEY)):
                dvc(dest, self.env(False), "remote", "modify", "--local", REMOTE, key, value)
        return dest

    def mlflow_runs(self) -> int:
        """How many runs the team's tracking store holds."""
        with sqlite3.connect(self.tracking_db) as db:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def timed(self, label: str, repo: Path, env: dict[str, str], *args: str
              ) -> subprocess.CompletedProcess[str]:
        """`dvc *args` in ``repo``, its wall time recorded under ``label``."""
        t0 = time.monotonic()
        proc = dvc(repo, env, *args)
        self.timings[label] = time.monotonic() - t0
        return proc


def sh(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True,
       timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on failure show its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                             f"\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def dvc(repo: Path, env: dict[str, str], *args: str, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    return sh(["dvc", *args], repo, env, check=check)


def git(repo: Path, *args: str) -> str:
    return sh(["git", *args], repo, pipeline_env()).stdout


def producing_stages(repo: Path) -> list[str]:
    """The stages of ``repo``'s dvc.yaml that write outputs: the ones that must not rerun."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return [name for name, stage in stages.items()
            if stage.get("outs") or stage.get("metrics") or stage.get("plots")]


def stages_run(output: str, repo: Path) -> list[str]:
    """Which producing stages DVC actually ran (it prints "Running stage '<name>'")."""
    return [s for s in producing_stages(repo) if f"Running stage '{s}'" in output]


def cached_files(repo: Path) -> set[str]:
    """Remote keys that must exist for every DVC-cached output of ``repo`` (its dvc.lock's
    hashes of the outs dvc.yaml does not mark `cache: false`; those live in git)."""
    uncached = set()
    for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                if isinstance(out, dict):
                    uncached |= {p for p, opts in out.items() if (opts or {}).get("cache") is False}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    keys = set()
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] not in uncached:
                md5 = out["md5"]
                keys.add(f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}")
    assert keys, "no DVC-cached output in dvc.lock"
    return keys


def output_bytes(repo: Path) -> dict[str, bytes]:
    """The pipeline's outputs in ``repo``, by path (what "the same results" means)."""
    paths = [p for top in ("data/processed", "models", "reports") if (repo / top).exists()
             for p in sorted((repo / top).rglob("*")) if p.is_file()]
    return {str(p.relative_to(repo)): p.read_bytes() for p in paths
            if p.name != ".gitignore"}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[Team]:
    """Repo A trained, committed, pushed to the S3 remote (with run-cache) and to git."""
    root = tmp_path_factory.mktemp("team")
    s3 = MotoS3(root)
    team = Team(s3, root / "origin.git", root / "team-mlflow.db", root / "a")
    try:
        s3.create_bucket(BUCKET)
        sh(["git", "init", "-q", "--bare", "--initial-branch=main", str(team.origin)], root,
           pipeline_env())
        repo = make_repo_copy(team.repo_a)
        configure_tiny_digits(repo)
        env = team.env()
        # As the README shows: the bucket is the default remote, the endpoint committed,
        # the keys not (here: in the environment).
        dvc(repo, env, "remote", "add", "-d", REMOTE, f"s3://{BUCKET}/{PREFIX}")
        dvc(repo, env, "remote", "modify", REMOTE, "endpointurl", s3.endpoint)
        assert ACCESS_KEY not in (repo / ".dvc/config").read_text()
        with open(repo / ".gitignore", "a") as f:
            f.write("/.litpipe/\n")  # local training state, never shared
        t0 = time.monotonic()
        dvc(repo, env, "repro")
        team.timings["repro (A, trains)"] = time.monotonic() - t0
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "trained the tiny config")
        team.timed("push --run-cache (A)", repo, env, "push", "--run-cache")
        git(repo, "remote", "add", "origin", str(team.origin))
        git(repo, "push", "-q", "origin", "HEAD:refs/heads/main")
        yield team
    finally:
        s3.stop()
        if team.timings:  # shown even when pytest captures output (-q, CI)
            line = "test_remote_s3 timings: " + ", ".join(
                f"{k} {v:.1f} s" for k, v in team.timings.items())
            capture = request.config.pluginmanager.get_plugin("capturemanager")
            with capture.global_and_fixture_disabled():
                print("\n" + line)


def test_fresh_clone_pulls_everything_and_reruns_nothing(team: Team, tmp_path: Path) -> None:
    # Every DVC-cached output of A is in the bucket, under the remote's path.
    on_s3 = set(team.s3.keys(BUCKET, PREFIX + "/"))
    assert cached_files(team.repo_a) <= on_s3, sorted(cached_files(team.repo_a) - on_s3)

    # Without credentials the bucket is closed: the keys really come from config.local.
    clone = team.clone(tmp_path / "no-keys")
    refused = dvc(clone, team.env(credentials=False), "pull", check=False)
    assert refused.returncode != 0, refused.stdout
    assert not (clone / "models/best.ckpt").exists()

    b = team.clone(tmp_path / "b", credentials="local")
    assert git(b, "status", "--porcelain") == ""  # .dvc/config.local is not committed
    sh(["git", "check-ignore", "-q", ".dvc/config.local"], b, pipeline_env())
    assert ACCESS_KEY in (b / ".dvc/config.local").read_text()

    team.timed("pull (fresh clone)", b, team.env(credentials=False), "pull")
    assert output_bytes(b) == output_bytes(team.repo_a)
    assert (b / "models/export/model.onnx").stat().st_size > 0

    runs = team.mlflow_runs()
    status = dvc(b, team.env(False), "status")
    assert UP_TO_DATE in status.stdout, status.stdout
    repro = dvc(b, team.env(False), "repro")
    assert stages_run(repro.stdout, b) == [], repro.stdout
    assert team.mlflow_runs() == runs
    assert output_bytes(b) == output_bytes(team.repo_a)


@pytest.fixture(scope="module")
def experiment_c(team: Team, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Teammate C's clone after training other params as a DVC experiment and sharing it: the
    run-cache (scripts/push_run_cache.py) and the experiment (`dvc exp push`). C commits
    nothing to the branch: others see the run-cache and the experiment's ref, no dvc.lock."""
    c = team.clone(tmp_path_factory.mktemp("teammate-c") / "c")
    env = team.env()
    dvc(c, env, "pull")
    # The params are set by editing params.yaml, as B does below: the same edit of the same
    # committed file gives the same bytes, which the validate stage depends on. (`exp run -S`
    # would rewrite the file in DVC's own YAML style, and validate would then rerun for B.)
    edit_params(c / "params.yaml", {"optimizer.lr": TRAINED_LR})
    trained = dvc(c, env, "exp", "run", "-n", EXPERIMENT)
    assert "train" in stages_run(trained.stdout, c), trained.stdout
    team.timed("exp push (C)", c, env, "exp", "push", "origin", EXPERIMENT)
    on_s3 = set(team.s3.keys(BUCKET, PREFIX + "/"))  # `exp push` uploaded its outputs
    assert cached_files(c) <= on_s3, sorted(cached_files(c) - on_s3)
    t0 = time.monotonic()
    sh([sys.executable, str(ROOT / "scripts/push_run_cache.py")], c, env)
    team.timings["push_run_cache.py (C)"] = time.monotonic() - t0
    assert team.s3.keys(BUCKET, PREFIX + "/runs/"), "no run-cache entry on the remote"
    return c  # `exp run` left the experiment's results in C's workspace


def test_teammate_restores_params_trained_by_another_from_the_run_cache(
        team: Team, experiment_c: Path, tmp_path: Path) -> None:
    runs = team.mlflow_runs()
    # Teammate B asks for the params C trained: fetch the run-cache entries, then
    # `repro --pull` fetches the outputs of the entry that matches; nothing trains.
    b = team.clone(tmp_path / "b")
    env = team.env()
    edit_params(b / "params.yaml", {"optimizer.lr": TRAINED_LR})
    team.timed("pull --run-cache (B)", b, env, "pull", "--run-cache")
    restored = team.timed("repro --pull restoring from run-cache (B)", b, env, "repro",
                          "--pull")
    assert stages_run(restored.stdout, b) == [], restored.stdout
    for stage in ("train", "evaluate", "export"):
        assert f"Stage '{stage}' is cached - skipping run" in restored.stdout, restored.stdout
    assert team.mlflow_runs() == runs  # no new MLflow run appeared
    assert output_bytes(b) == output_bytes(experiment_c)  # C's results, byte for byte
    assert json.loads((b / "models/run.json").read_text()) == \
        json.loads((experiment_c / "models/run.json").read_text())  # C's MLflow run
    status = dvc(b, env, "status")
    assert UP_TO_DATE in status.stdout, status.stdout


def test_experiment_shared_through_the_git_remote(team: Team, experiment_c: Path,
                                                  tmp_path: Path) -> None:
    assert "refs/exps/" in git(experiment_c, "ls-remote", "origin")  # C's push landed

    d = team.clone(tmp_path / "d", credentials="local")
    env = team.env(credentials=False)
    listed = dvc(d, env, "exp", "list", "origin")
    assert EXPERIMENT in listed.stdout, listed.stdout
    team.timed("exp pull (D)", d, env, "exp", "pull", "origin", EXPERIMENT)
    shown = json.loads(dvc(d, env, "exp", "show", "--json").stdout)
    assert EXPERIMENT in json.dumps(shown)
    dvc(d, env, "exp", "apply", EXPERIMENT)
    assert yaml.safe_load((d / "params.yaml").read_text())["optimizer"]["lr"] == TRAINED_LR
    assert output_bytes(d) == output_bytes(experiment_c)  # C's outputs, from the bucket
    status = dvc(d, env, "status")
    assert UP_TO_DATE in status.stdout, status.stdout
