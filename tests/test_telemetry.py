"""No usage reports leave a fresh clone: DVC's analytics, MLflow's and ONNX Runtime's
telemetry are off unless the user opts in.

Each is checked by the configuration the tool itself reads, in a child process whose
environment has none of the markers that would switch telemetry off anyway (pytest's own
``PYTEST_CURRENT_TEST``, ``CI``, ``DVC_TEST``, ...), so what is tested is the repository's
setting and nothing else. What each dependency does is listed in the README ("Telemetry").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.repo import ROOT

# Variables that disable telemetry by themselves (MLflow's CI/test detection, DVC's test
# switch, the opt-outs): removed from the child, so only the repository decides. A marker
# MLflow adds later is caught by the child's own check below, not silently relied on.
MARKERS = ("PYTEST_CURRENT_TEST", "PYTEST_VERSION", "GITHUB_ACTIONS", "CI", "CIRCLECI",
           "GITLAB_CI", "JENKINS_URL", "TRAVIS", "TF_BUILD", "BITBUCKET_BUILD_NUMBER",
           "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION",
           "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID", "DVC_TEST",
           "DVC_NO_ANALYTICS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK",
           "ITERATIVE_DO_NOT_TRACK", "_MLFLOW_TESTING_TELEMETRY", "ORT_DISABLE_TELEMETRY",
           "ORT_RUNNING_UNIT_TESTS")


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment: no telemetry markers, an empty home (no global DVC config)."""
    env = {k: v for k, v in os.environ.items() if k not in MARKERS}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONWARNINGS="ignore",
               **extra)
    return env


def fresh_clone(dest: Path) -> Path:
    """What `git clone` gives: the committed DVC files, no .dvc/config.local."""
    (dest / ".dvc").mkdir(parents=True)
    for name in (".dvc/config", ".dvc/.gitignore", ".dvcignore"):
        shutil.copy2(ROOT / name, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


DVC_SWITCHES = """
import json
from dvc import analytics
from dvc.updater import Updater
print(json.dumps({"analytics": analytics.is_enabled(),
                  "check_update": Updater(".dvc/tmp").is_enabled()}))
"""


def dvc_switches(repo: Path, env: dict[str, str]) -> dict[str, bool]:
    proc = subprocess.run([sys.executable, "-c", DVC_SWITCHES], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dvc_reports_nothing_in_a_fresh_clone(tmp_path: Path) -> None:
    """`core.analytics false` (the usage report every dvc command would leave in $TMPDIR
    and send) and `core.check_update false` (the version check of `dvc version`)."""
    repo = fresh_clone(tmp_path / "clone")
    env = user_env(tmp_path / "home")
    assert dvc_switches(repo, env) == {"analytics": False, "check_update": False}
    # Opting in, as the README says, turns it back on: the switch read is the real one.
    subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "core.analytics", "true"],
                   cwd=repo, env=env, check=True, capture_output=True, timeout=120)
    assert dvc_switches(repo, env)["analytics"] is True


LIBRARY_SWITCHES = """
import importlib, json, os, sys
importlib.import_module(sys.argv[1])  # what runs first: a stage's runner, the CLI, the model
import mlflow
from mlflow.telemetry import utils
from mlflow.telemetry.client import get_telemetry_client
print(json.dumps({"ci_or_testing": utils._IS_IN_CI_ENV_OR_TESTING,
                  "mlflow_disabled": utils.is_telemetry_disabled(),
                  "mlflow_client": get_telemetry_client() is not None,
                  "ort_disabled": os.environ.get("ORT_DISABLE_TELEMETRY")}))
"""


@pytest.mark.parametrize("entry", ["litpipe.stage", "litpipe.cli", "litpipe.onnx_model"])
def test_library_telemetry_is_off_for_stages_cli_and_model(entry: str, tmp_path: Path) -> None:
    """Every stage imports litpipe.stage first, `litpipe predict` and `litpipe gate` come in
    through litpipe.cli, and the served model opens its ONNX file through litpipe.onnx_model.
    Python runs the litpipe package's ``__init__`` before any of its modules, and it sets
    MLflow's and ONNX Runtime's switches, so both are set before either library is imported
    (each decides once, at import or initialisation)."""
    proc = subprocess.run([sys.executable, "-c", LIBRARY_SWITCHES, entry], cwd=ROOT,
                          env=user_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["ci_or_testing"] is False, "the child still looks like CI: update MARKERS"
    assert found == {"ci_or_testing": False, "mlflow_disabled": True, "mlflow_client": False,
                     "ort_disabled": "1"}


def test_users_can_opt_in(tmp_path: Path) -> None:
    """The defaults are only defaults: the user's ``MLFLOW_DISABLE_TELEMETRY=false`` and
    ``ORT_DISABLE_TELEMETRY=0`` survive litpipe's import (the libraries themselves are not
    imported here: they would start reporting)."""
    code = ("import os, litpipe.stage; "
            "print(os.environ['MLFLOW_DISABLE_TELEMETRY'], os.environ['ORT_DISABLE_TELEMETRY'])")
    env = user_env(tmp_path, MLFLOW_DISABLE_TELEMETRY="false", ORT_DISABLE_TELEMETRY="0")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, env=env,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["false", "0"]
