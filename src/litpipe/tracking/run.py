"""The one MLflow run each model gets: with :mod:`.served` (the registered model), the
only way litpipe writes to MLflow.

The train stage creates the run (:meth:`TrackedRun.start`) and names it in
``models/run.json``; evaluate and export attach to it (:meth:`TrackedRun.attach`) and add
their metrics, pictures and the registered model (``served.log_served_model``), so one
run holds the whole story.

**Outages.** A run opened with an ``outbox`` (the train stage keeps one in its resume
directory) never lets a tracking outage stop training: a write that fails because the
server is unreachable is appended to the outbox, later writes queue behind it (order is
kept), and :meth:`flush` replays the queue once the server answers again (tried at most
every :data:`RETRY_AFTER_S`, at the end of the stage, and on the next run). Writes the
server *refuses* are not outages and are never queued: a 401/403 (a wrong login, a missing
permission) is a :class:`TrackingError` naming the server and what was refused, since no
retry would succeed; another HTTP 4xx is a bug and raises. Without an outbox, a failure
is a :class:`TrackingError` naming the URI.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from litpipe.errors import first_line
from litpipe.formats import flatten
from litpipe.schema import Params
from litpipe.tracking.client import (
    TrackingError,
    is_outage,
    mlflow_client,
    refusal_status,
    tracking_error,
)
from litpipe.tracking.store import artifact_location, check_permission, check_store

MAX_PARAM_VALUE = 6000  # MLflow 3's limit on a param value's length
MAX_BATCH = 100  # MLflow's limit on params (and a safe number of metrics) in one log_batch
RETRY_AFTER_S = 30.0  # while the server is away, try it again at most this often


def read_run_file(run_json: Path) -> tuple[str, str]:
    """``(tracking URI, run id)`` from ``models/run.json``; one-line errors if it is missing
    or not what the train stage writes."""
    from litpipe.errors import MissingInputError

    try:
        run = json.loads(run_json.read_text())
        uri, run_id = run["tracking_uri"], run["run_id"]
    except FileNotFoundError:
        raise MissingInputError(f"{run_json}: missing; run the train stage first "
                                "(dvc repro train)") from None
    except (ValueError, KeyError, TypeError):
        raise TrackingError(f"{run_json}: not the run file the train stage writes "
                            "(JSON with run_id and tracking_uri); rerun `dvc repro "
                            "train`") from None
    if not (isinstance(uri, str) and isinstance(run_id, str)):
        raise TrackingError(f"{run_json}: run_id and tracking_uri must be strings; rerun "
                            "`dvc repro train`")
    return uri, run_id


class TrackedRun:
    """One model's MLflow run; every stage logs to it through these methods."""

    def __init__(self, uri: str, run_id: str, outbox: Path | None = None) -> None:
        self.uri = uri
        self.run_id = run_id
        self.client = mlflow_client(uri)
        self.outbox = outbox
        self._last_try = 0.0
        self._warned = False

    # ------------------------------------------------------------------ open a run

    @classmethod
    def start(cls, uri: str, experiment: str, name: str, tags: dict[str, str],
              outbox: Path | None = None) -> TrackedRun:
        """Create a new run in ``experiment`` (created, with a durable artifact root, if new)."""
        mlflow = mlflow_client(uri)
        try:
            exp = mlflow.get_experiment_by_name(experiment)
            if exp is not None:
                exp_id = exp.experiment_id
            else:
                try:
                    exp_id = mlflow.create_experiment(
                        experiment, artifact_location=artifact_location(uri))
                except Exception:  # created concurrently by a parallel queued experiment
                    exp = mlflow.get_experiment_by_name(experiment)
                    if exp is None:
                        raise
                    exp_id = exp.experiment_id
            run = mlflow.create_run(exp_id, run_name=name, tags=tags)
        except Exception as exc:
            raise tracking_error(uri, "could not create a run", exc) from None
        return cls(uri, run.info.run_id, outbox)

    @classmethod
    def attach(cls, run_json: Path) -> TrackedRun:
        """The run that trained the model described by ``models/run.json``."""
        uri, run_id = read_run_file(run_json)
        check_store(uri)
        check_permission(uri, "experiment", "", "EDIT", "this stage logs to that run",
                         run_id=run_id)
        return cls(uri, run_id)

    def check_can_register(self, registered_model: str) -> None:
        """Fail now, in one line, when this login may not register versions of
        ``registered_model`` (EDIT on it): the export stage asks before its work, not after."""
        check_permission(self.uri, "registered_model", registered_model, "EDIT",
                         "the export stage registers a version of it")

    def status(self) -> str | None:
        """The run's status on the server (RUNNING, FINISHED, ...), or None if unreachable."""
        try:
            return str(self.client.get_run(self.run_id).info.status)
        except Exception as exc:
            if is_outage(exc):
                return None
            if refusal_status(exc):
                raise tracking_error(self.uri, f"could not read run {self.run_id}",
                                     exc) from None
            raise

    def logged_metrics(self) -> dict[str, float]:
        """The latest value of every metric the run has logged (a TrackingError if the
        store cannot be read)."""
        try:
            return dict(self.client.get_run(self.run_id).data.metrics)
        except Exception as exc:
            raise tracking_error(self.uri, f"could not read run {self.run_id}", exc) from None

    def last_logged_step(self, key: str) -> int:
        """The highest step logged for metric ``key`` (-1: none, or the server is away)."""
        try:
            history = self.client.get_metric_history(self.run_id, key)
        except Exception as exc:
            if is_outage(exc):
                return -1
            if refusal_status(exc):
                raise tracking_error(self.uri, f"could not read run {self.run_id}",
                                     exc) from None
            raise
        return max((m.step for m in history), default=-1)

    # ----------------------------------------------------------------- what stages log

    def log_params(self, params: Params) -> None:
        """The whole params.yaml, flattened (``optimizer.lr``), in batches within MLflow's limits.

        Lightning's ``MLFlowLogger.log_hyperparams`` cuts values at 250 characters (an old
        MLflow limit), which mangles lists such as the mirror URLs; MLflow 3 accepts 6000.
        """
        self.log_values({k: str(v) for k, v in flatten(params.model_dump(mode="json")).items()})

    def log_values(self, values: dict[str, str]) -> None:
        """String params (``tuned.lr``, ...), batched."""
        items = [[k, v[:MAX_PARAM_VALUE]] for k, v in sorted(values.items())]
        for i in range(0, len(items), MAX_BATCH):
            self._send({"op": "batch", "params": items[i: i + MAX_BATCH]})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Several metrics at one ``step`` (the epoch, for curves), batched."""
        now = int(time.time() * 1000)
        items = [[k, float(v), now, step] for k, v in metrics.items()]
        for i in range(0, len(items), MAX_BATCH):
            self._send({"op": "batch", "metrics": items[i: i + MAX_BATCH]})

    def log_artifact(self, path: Path, folder: str) -> None:
        """Upload ``path`` into the run's artifact folder ``folder`` (the file must stay put
        until it is sent: outbox entries refer to it)."""
        self._send({"op": "artifact", "path": str(Path(path).resolve()), "folder": folder})

    def log_dataset(self, stats: dict[str, Any], source: str) -> None:
        """Record the processed dataset as an MLflow dataset input (name, digest, source).

        The digest is the split stage's content hash, so two runs on the same data show the
        same dataset in the UI, and a changed split shows up as a different one.
        """
        schema = {"images": {"dtype": "uint8", "shape": [-1, *stats["shape"]]},
                  "labels": {"dtype": "int64", "classes": stats["classes"]}}
        profile = {"counts": stats["counts"], "class_counts": stats["class_counts"]}
        self._send({"op": "dataset", "name": str(stats["dataset"]),
                    "digest": str(stats["data_hash"])[:36], "source": source,
                    "schema": json.dumps(schema), "profile": json.dumps(profile)})

    @staticmethod
    def unfinished_ids(uri: str, experiment: str, tag: str, value: str) -> list[str]:
        """The ids of the runs of ``experiment`` tagged ``tag = value`` that a resume would
        have continued (RUNNING after a kill -9, KILLED after a stop): a training whose run
        file was lost is found by its resume fingerprint."""
        mlflow = mlflow_client(uri)
        try:
            exp = mlflow.get_experiment_by_name(experiment)
            if exp is None:
                return []
            runs = mlflow.search_runs([exp.experiment_id], filter_string=(
                f"tags.`{tag}` = '{value}'"))
        except Exception as exc:
            raise tracking_error(uri, "could not search the runs", exc) from None
        return [r.info.run_id for r in runs if r.info.status in ("RUNNING", "KILLED")]

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set run tags (a sweep's retried trial takes over the run it resumes)."""
        self._send({"op": "tags", "tags": tags})

    def set_status(self, status: str) -> None:
        """``RUNNING`` (a resumed run), ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self._send({"op": "status", "status": status})

    # ------------------------------------------------------------- sending and queueing

    def _perform(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

        kind = op["op"]
        if kind == "batch":
            self.client.log_batch(
                self.run_id, metrics=[Metric(*m) for m in op.get("metrics", [])],
                params=[Param(*p) for p in op.get("params", [])])
        elif kind == "artifact":
            if not Path(op["path"]).is_file():  # replaced since it was queued: skip it
                print(f"litpipe: {op['path']} is gone; not sent to MLflow", file=sys.stderr)
                return
            self.client.log_artifact(self.run_id, op["path"], artifact_path=op["folder"])
        elif kind == "dataset":
            dataset = Dataset(name=op["name"], digest=op["digest"], source_type="local",
                              source=json.dumps({"uri": op["source"]}), schema=op["schema"],
                              profile=op["profile"])
            self.client.log_inputs(self.run_id, datasets=[
                DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])
        elif kind == "tags":
            self.client.log_batch(self.run_id, tags=[RunTag(k, v)
                                                     for k, v in op["tags"].items()])
        elif kind == "status":
            if op["status"] == "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                self.client.set_terminated(self.run_id, status=op["status"])

    def pending(self) -> int:
        """How many writes wait in the outbox."""
        if self.outbox is None or not self.outbox.exists():
            return 0
        return sum(1 for line in self.outbox.read_text().splitlines() if line.strip())

    def _send(self, op: dict[str, Any]) -> None:
        if self.pending():  # keep order: queue behind what is waiting, unless it drains now
            if time.monotonic() - self._last_try < RETRY_AFTER_S or not self.flush():
                self._queue(op)
                return
        try:
            self._perform(op)
        except Exception as exc:
            if refusal_status(exc):  # a refusal: queueing it would only fail again later
                raise tracking_error(self.uri, f"refused a write to run {self.run_id}",
                                     exc) from None
            if self.outbox is None or not is_outage(exc):
                if is_outage(exc):
                    raise tracking_error(self.uri, "did not accept a write", exc) from None
                raise
            self._last_try = time.monotonic()
            self._queue(op)
            if not self._warned:
                self._warned = True
                print(f"litpipe: MLflow tracking server {self.uri} is unreachable "
                      f"({first_line(exc)}); training goes on, and what it logs waits in "
                      f"{self.outbox} until the server is back", file=sys.stderr)

    def _queue(self, op: dict[str, Any]) -> None:
        assert self.outbox is not None
        with self.outbox.open("a") as fh:
            fh.write(json.dumps(op) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def flush(self) -> bool:
        """Replay the outbox in order; True when it is empty afterwards.

        Sent entries are removed as they go, so a kill or a new outage mid-replay neither
        loses nor repeats them (the file is rewritten with what is left).
        """
        if not self.pending():
            return True
        assert self.outbox is not None
        self._last_try = time.monotonic()
        ops = [json.loads(line) for line in self.outbox.read_text().splitlines()
               if line.strip()]
        for i, op in enumerate(ops):
            try:
                self._perform(op)
            except Exception as exc:
                refused = refusal_status(exc)
                if not (refused or is_outage(exc)):
                    raise
                rest = "".join(json.dumps(o) + "\n" for o in ops[i:])
                tmp = self.outbox.with_suffix(".tmp")
                tmp.write_text(rest)
                os.replace(tmp, self.outbox)
                if refused:  # what is left waits for a run with a login that may write
                    raise tracking_error(self.uri, f"refused a queued write to run "
                                         f"{self.run_id}", exc) from None
                return False
        self.outbox.unlink()
        if self._warned:
            print(f"litpipe: MLflow tracking server {self.uri} is back; {len(ops)} queued "
                  "write(s) sent", file=sys.stderr)
            self._warned = False
        return True


