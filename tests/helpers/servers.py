"""The PostgreSQL-backed MLflow stack of ``scripts/mlflow_server.sh``: whether it can run here."""

from __future__ import annotations

import glob


def stack_unavailable() -> str | None:
    """Why the PostgreSQL-backed stack cannot start here, or None."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL server binaries missing (apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 missing (pip install psycopg2-binary, or -e '.[server]')"
    return None
