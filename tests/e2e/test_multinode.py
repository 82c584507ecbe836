"""Training across machines with Lightning's own distributed engine, simulated on 127.0.0.1.

Two "nodes" are two clones of the repository (each with its own data and outputs, as two
machines would have), each running the README's command:

    torchrun --nnodes 2 --nproc-per-node 1 --node-rank N \\
             --master-addr HEAD --master-port PORT stages/train.py

with ``trainer.num_nodes: 2`` and ``trainer.strategy: ddp`` (gloo on CPU). The head node
(rank 0) writes every output and owns the one MLflow run; the other node writes nothing.
The model is as good as a single-process run of the same params.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.repo import configure_tiny_digits, edit_params, make_repo_copy, pipeline_env, run

pytestmark = pytest.mark.e2e

NODES = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_repo(dest: Path, **edits: object) -> Path:
    repo = make_repo_copy(dest)
    configure_tiny_digits(repo)
    edit_params(repo / "params.yaml", {"trainer.max_epochs": 4,
                                       "callbacks.early_stopping.enabled": False, **edits})
    run(["git", "commit", "-qam", "multi-node config"], repo)
    run(["dvc", "repro", "split"], repo)
    return repo


def torchrun_command(node_rank: int, port: int) -> list[str]:
    """The README's command for one node (torchrun is ``python -m torch.distributed.run``)."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={NODES}",
            "--nproc-per-node=1", f"--node-rank={node_rank}", "--master-addr=127.0.0.1",
            f"--master-port={port}", "stages/train.py"]


def test_two_nodes_train_one_model_with_one_run(tmp_path: Path) -> None:
    multi = {"trainer.num_nodes": NODES, "trainer.strategy": "ddp"}
    nodes = [node_repo(tmp_path / f"node{i}", **multi) for i in range(NODES)]
    port = _free_port()
    procs = [subprocess.Popen(torchrun_command(i, port), cwd=repo, env=pipeline_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, repo in enumerate(nodes)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    head, other = nodes

    summary = json.loads((head / "models/run.json").read_text())
    assert summary["world_size"] == NODES
    with sqlite3.connect(head / "mlflow.db") as db:
        runs = db.execute("select run_uuid, status from runs").fetchall()
    assert runs == [(summary["run_id"], "FINISHED")]
    # Global rank 0 writes the outputs and talks to MLflow; the other node writes nothing.
    assert not (other / "models").exists() and not (other / "mlflow.db").exists()
    assert not (other / "reports/train_history.csv").exists()

    # As good as one process training the same params.
    single = node_repo(tmp_path / "single")
    run([sys.executable, "stages/train.py"], single)
    for repo in (head, single):
        run([sys.executable, "stages/evaluate.py"], repo)
    acc = {name: json.loads((repo / "reports/metrics.json").read_text())["test_acc"]
           for name, repo in (("two nodes", head), ("one process", single))}
    assert acc["two nodes"] >= acc["one process"] - 0.05, acc
