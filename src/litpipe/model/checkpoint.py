"""Checkpoint loading: a ``.ckpt`` file back into a LightningModule, or one clear error.

It lives beside the LightningModules so that evaluate, export and predict read a model
without importing the train stage. A checkpoint may come from a teammate's DVC cache, a
remote, or a user's command line, so two rules hold:

* **No code runs while loading.** ``torch.load(weights_only=True)`` unpickles only tensors
  and plain values; the module is rebuilt from the hyperparameters that
  ``save_hyperparameters`` stored (plain numbers, strings and lists).
* **Every unusable file fails with one line** naming the file, what is wrong with it and
  what to do. torch's own messages are not passed on where they would mislead: when
  ``weights_only`` refuses a file, torch suggests loading it with ``weights_only=False``,
  which would let that file run arbitrary code, so that advice is never repeated here.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from litpipe.catalog import NETWORKS
from litpipe.errors import LitpipeError, MissingInputError, first_line
from litpipe.model.module import LitAutoEncoder, LitBase, LitClassifier

# What to do about any bad checkpoint: the train stage writes it, DVC caches it.
REMEDY = "rebuild it with `dvc repro train` (or restore the tracked copy with `dvc pull`)"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save (and so Lightning) has written zip archives since 1.6


class CheckpointError(LitpipeError, ValueError):
    """A checkpoint file exists but cannot be used; the message names it and says why."""


def _short(exc: BaseException) -> str:
    """The first sentence of ``exc``, for a one-line message.

    torch's messages run to several sentences (and lines) of advice; the first sentence says
    what happened. Anything mentioning ``weights_only`` is dropped (see the module doc).
    """
    name = type(exc).__name__
    text = first_line(exc).split(". ")[0].rstrip(".")[:160]
    if "weights_only" in text or text == name:
        return name
    return f"{name}: {text}"


def _read(path: Path, map_location: str) -> Any:
    """``torch.load`` of ``path`` with ``weights_only=True``; a CheckpointError if unreadable."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(ZIP_MAGIC))
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc}); check the "
                              "file's permissions") from None
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint; {REMEDY}")
    if head != ZIP_MAGIC:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (a .ckpt is a zip archive, "
                              f"this {size}-byte file is not one); {REMEDY}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # weights_only met a reference to a class or function. litpipe's checkpoints hold
        # none, so this file is not one of ours, and loading it anyway could run its code.
        raise CheckpointError(
            f"{path}: refused: it holds pickled Python objects other than tensors and plain "
            "values, which litpipe checkpoints never contain, and unpickling them could run "
            f"code; {REMEDY}") from None
    except Exception as exc:  # whatever torch.load trips over inside the file
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({size} bytes; "
                              f"{_short(exc)}); {REMEDY}") from None


def _describe(obj: Any) -> str:
    """A few words on what a loaded file holds, for the not-a-litpipe-checkpoint message."""
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:6]) + (", ..." if len(obj) > 6 else "")
        return f"a dict with keys {keys}" if obj else "an empty dict"
    return f"a {type(obj).__name__}"


def _weights_problem(module: LitBase, state: dict[str, Any]) -> str:
    """What is wrong with ``state`` as weights for ``module`` ("" when they fit).

    Checked here rather than left to ``load_state_dict``, whose error lists every tensor on
    its own line: one line with counts and the first example is what a user can act on.
    """
    want = module.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [k for k in want if k in state and (
        not isinstance(state[k], torch.Tensor) or state[k].shape != want[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    if shapes:
        k = shapes[0]
        got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else \
            type(state[k]).__name__
        parts.append(f"{len(shapes)} of the wrong shape, e.g. {k}: {got} in the file, "
                     f"{tuple(want[k].shape)} expected")
    return "; ".join(parts)


def load_module(path: Path, map_location: str = "cpu") -> LitBase:
    """Rebuild the LightningModule saved in checkpoint ``path``, in eval mode.

    Raises :class:`~litpipe.errors.MissingInputError` when ``path`` is not a file and
    :class:`CheckpointError` when it is not a usable litpipe checkpoint (empty, truncated,
    corrupted, another program's file, or weights that do not fit the network it names).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such checkpoint file; {REMEDY}")
    ckpt = _read(path, map_location)
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: a PyTorch file but not a Lightning checkpoint of a litpipe model (it "
            f"holds {_describe(ckpt)}; a checkpoint has 'hyper_parameters' and "
            f"'state_dict'); {REMEDY}")
    network = hp.get("network")
    if not isinstance(network, str) or network not in NETWORKS:
        raise CheckpointError(
            f"{path}: a Lightning checkpoint, but not of a litpipe model (hyper_parameters "
            f"'network' is {network!r}, expected one of {', '.join(NETWORKS)}); {REMEDY}")
    cls = LitAutoEncoder if NETWORKS[network].task == "reconstruction" else LitClassifier
    try:
        module = cls(**hp)
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        # A hyperparameter added, renamed or removed since the file was written.
        raise CheckpointError(
            f"{path}: its hyper_parameters do not fit this litpipe version's {cls.__name__} "
            f"({_short(exc)}); it was written by another version: {REMEDY}") from None
    problem = _weights_problem(module, state)
    if problem:
        raise CheckpointError(f"{path}: its weights do not fit the {network} network its "
                              f"hyper_parameters describe ({problem}); {REMEDY}")
    module.load_state_dict(state)
    module.eval()
    return module
