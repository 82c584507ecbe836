"""The Optuna study of a sweep: its storage (shared by every worker), sampler and pruner,
and what its trials add up to.

The storage is an SQL database through Optuna's ``RDBStorage``: an SQLite file under
``.litpipe/`` for workers on one machine, or a PostgreSQL URL for a team, given in
``$LITPIPE_SWEEP_STORAGE`` (credentials stay in the environment, never in sweep.yaml).
Workers keep a heartbeat on their running trial; a trial whose heartbeat stops (its worker
was killed) is failed by the next worker that looks, and Optuna's retry callback queues its
params again as a new trial (``heartbeat_stale_trial_callback``, the name Optuna 5 gives
``failed_trial_callback``).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from litpipe.locks import locked
from litpipe.sweep.spec import Choices, FloatRange, Sweep, SweepError
from litpipe.sweep.trial import build_pruner

STORAGE_ENV = "LITPIPE_SWEEP_STORAGE"
DEFAULT_DB = Path(".litpipe/sweep.db")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A trial someone is running or will run: counted against the requested number.
PENDING = (TrialState.RUNNING, TrialState.WAITING)


def storage_url(sweep: Sweep, root: Path, env: dict[str, str]) -> str:
    """``$LITPIPE_SWEEP_STORAGE`` > sweep.yaml's ``storage`` > SQLite in ``.litpipe/``."""
    if env.get(STORAGE_ENV):
        return env[STORAGE_ENV]
    if sweep.storage:
        return sweep.storage
    (root / DEFAULT_DB.parent).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / DEFAULT_DB).resolve()}"


def _engine_kwargs(url: str) -> dict[str, Any]:
    # Two workers and their trainings write one SQLite file: wait for its lock, not fail.
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def open_storage(url: str, sweep: Sweep | None = None,
                 on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None
                 ) -> optuna.storages.RDBStorage:
    """The study's storage; with ``sweep``, heartbeats on (workers), else off (readers)."""
    hb: dict[str, Any] = {}
    if sweep is not None:
        hb = {"heartbeat_interval": sweep.heartbeat.interval,
              "grace_period": sweep.heartbeat.grace,
              "heartbeat_stale_trial_callback": on_stale}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **hb)
    except Exception as exc:  # noqa: BLE001 (bad URL, server down, no driver: one line)
        raise SweepError(f"cannot open the sweep storage ({_redact(url)}): "
                         f"{str(exc).splitlines()[0]}") from None


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if "@" in rest else url


def lock_key(study: str) -> int:
    """The PostgreSQL advisory-lock key of ``study``: a signed 64-bit number from its name
    (prefixed, so that other programs' advisory locks on the same server do not collide)."""
    digest = hashlib.sha256(f"litpipe.sweep:{study}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def study_lock(url: str, study: str, lock_file: Path) -> Iterator[None]:
    """Hold the study's lock for the block: one worker at a time joins the study or creates
    its MLflow parent run, wherever the workers run.

    PostgreSQL: a transaction-level advisory lock (``pg_advisory_xact_lock``) on the study's
    key, so workers on several machines take turns. Optuna has no lock of its own, and a
    file lock reaches no further than one machine. The server drops the lock with the
    transaction, when the block ends or the worker's connection dies (``kill -9``
    included), so a lock never outlives its holder. Any other storage (SQLite) is one
    machine's: ``lock_file``, an ``flock`` with the same property.
    """
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    if make_url(url).get_backend_name() != "postgresql":
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with locked(lock_file):
            yield
        return
    engine = create_engine(url, poolclass=NullPool)  # one connection, closed after
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(study)})
            yield
    finally:
        engine.dispose()


def build_sampler(sweep: Sweep, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler of the ``worker``-th worker to join (from 0): seeded ``seed + worker``.

    One seed for all would make workers started together propose the same params (the
    same random start, then the same history): each worker needs its own stream. A study
    run by one worker is thus reproducible from its seed; several workers interleave.
    """
    seed = None if sweep.sampler.seed is None else sweep.sampler.seed + worker
    if sweep.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(sweep: Sweep, storage: optuna.storages.BaseStorage, worker: int = 0
               ) -> optuna.Study:
    """Create the study, or join it; refuse a study whose direction sweep.yaml changed."""
    study = optuna.create_study(study_name=sweep.study, storage=storage,
                                sampler=build_sampler(sweep, worker),
                                pruner=build_pruner(sweep.pruner.model_dump()),
                                direction=sweep.objective.direction, load_if_exists=True)
    if study.direction.name.lower() != sweep.objective.direction:
        raise SweepError(f"study {sweep.study!r} exists with direction "
                         f"{study.direction.name.lower()}; sweep.yaml says "
                         f"{sweep.objective.direction}: name a new study")
    return study


def load_study(sweep: Sweep, url: str) -> optuna.Study:
    """An existing study, for reading (``--best``, ``--apply-best``)."""
    try:
        return optuna.load_study(study_name=sweep.study, storage=open_storage(url))
    except KeyError:
        raise SweepError(f"no study {sweep.study!r} in {_redact(url)}: run `litpipe sweep` "
                         "first") from None


def suggest(trial: optuna.Trial, sweep: Sweep) -> dict[str, Any]:
    """The trial's params from the space (a retried trial gets its stored ones back)."""
    values: dict[str, Any] = {}
    for key, dim in sweep.space.items():
        if isinstance(dim, Choices):
            values[key] = trial.suggest_categorical(key, dim.choices)
        elif isinstance(dim, FloatRange):
            values[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
        else:
            values[key] = trial.suggest_int(key, dim.low, dim.high, log=dim.log)
    return values


def join(study: optuna.Study) -> int:
    """This worker's number: how many joined the study before it (call under
    :func:`study_lock`, or two workers get one number, one seed, the same params)."""
    number = int(study.user_attrs.get("workers_joined", 0))
    study.set_user_attr("workers_joined", number + 1)
    return number


def tally(study: optuna.Study) -> tuple[int, int]:
    """``(finished, pending)``: COMPLETE or PRUNED trials, and RUNNING or WAITING ones."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return (sum(s in FINISHED for s in states), sum(s in PENDING for s in states))


def is_surplus(study: optuna.Study, number: int, wanted: int) -> bool:
    """Whether trial ``number`` is beyond the ``wanted`` finished-or-pending trials.

    Two workers may ask for a trial at the same moment when one is missing: both get one,
    and each sees the same numbers, so only the later is surplus (it is failed unrun, with
    the user attr ``surplus``). This holds across machines, where no file lock reaches.
    """
    live = sorted(t.number for t in study.get_trials(deepcopy=False)
                  if t.state in FINISHED + PENDING)
    return number not in live[:wanted]


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best COMPLETE trial (Optuna never takes a PRUNED one), or a SweepError."""
    try:
        return study.best_trial
    except ValueError:
        raise SweepError(f"study {study.study_name!r} has no complete trial yet") from None
