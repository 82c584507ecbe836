"""The PostgreSQL-backed MLflow stack of ``scripts/mlflow_server.sh``: whether it can run here,
and the stack itself, started in the background (tests/e2e/test_tracking_server.py,
tests/e2e/test_sweep.py)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
from pathlib import Path

from tests.helpers.repo import ROOT

SCRIPT = ROOT / "scripts/mlflow_server.sh"


def stack_unavailable() -> str | None:
    """Why the PostgreSQL-backed stack cannot start here, or None."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL server binaries missing (apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 missing (pip install psycopg2-binary, or -e '.[server]')"
    return None


class Stack:
    """scripts/mlflow_server.sh's stack in ``directory``, started in the background.

    The script is given this process's pid as ``OWNER_PID``, so its watchdog stops the
    servers even when pytest is killed before the fixture's teardown.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._uri: str | None = None
        self.users: set[str] = set()
        self._proc = subprocess.Popen(
            [str(SCRIPT), "start", str(directory)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "OWNER_PID": str(os.getpid())},
            start_new_session=True)

    def uri(self, timeout: float = 180) -> str:
        """Wait for the script (it returns once /health answers) and return the URI."""
        if self._uri is None:
            try:
                out, err = self._proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGTERM)
                out, err = self._proc.communicate()
                raise AssertionError(f"mlflow_server.sh start took over {timeout:.0f} s:\n"
                                     f"{out}{err}") from None
            assert self._proc.returncode == 0, f"mlflow_server.sh start failed:\n{out}{err}"
            line = out.strip().splitlines()[-1]
            assert line.startswith("MLFLOW_TRACKING_URI=http://127.0.0.1:"), out
            self._uri = line.split("=", 1)[1]
        return self._uri

    def login(self, name: str) -> dict[str, str]:
        """The environment a client logged in as ``name`` has (``admin``: the admin)."""
        if name == "admin":
            user = (self.dir / "admin_username").read_text().strip()
            password = (self.dir / "admin_password").read_text().strip()
        else:
            user, password = name, (self.dir / "users" / name).read_text().strip()
        return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}

    def add_user(self, name: str, role: str) -> None:
        """`mlflow_server.sh add-user NAME ROLE DIR`, as the docs tell an admin to."""
        proc = subprocess.run([str(SCRIPT), "add-user", name, role, str(self.dir)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        self.users.add(name)

    def stop(self) -> None:
        if self._proc.poll() is None:  # still starting: let it finish, then stop it
            try:
                self._proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
        subprocess.run([str(SCRIPT), "stop", str(self.dir)], capture_output=True, timeout=60)
