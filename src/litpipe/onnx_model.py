"""The exported model as its users run it: ``model.onnx`` with ``model.json`` beside it.

One loader and one way of turning outputs into answers (class names and probabilities),
shared by ``litpipe predict`` and the model ``mlflow models serve`` runs, so the two cannot
disagree. Every problem with either file raises :class:`~litpipe.errors.InputFileError`
naming it, rather than an onnxruntime or JSON traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from litpipe.errors import InputFileError, first_line
from litpipe.images import MAX_PIXELS

REBUILD_EXPORT = "rerun `dvc repro export` (or restore it with `dvc pull`)"


@dataclass(frozen=True)
class Prediction:
    """A model's raw answer for a batch: probabilities (or reconstructions), and context."""

    out: np.ndarray
    classes: list[str]
    task: str
    images: np.ndarray  # what the model was fed, float32 in [0, 1]



def _meta_error(meta_path: Path, problem: str) -> InputFileError:
    return InputFileError(f"{meta_path}: {problem}; it is written next to model.onnx by the "
                        f"export stage: {REBUILD_EXPORT}")


def _read_meta(meta_path: Path) -> tuple[str, tuple[int, int, int], str, list[str]]:
    """``model.json``: (input name, C×H×W, task, class names), each checked.

    The export stage writes ``{"task", "input": {"name", "shape": ["batch", C, H, W]},
    "output": {"classes"}}``; a file that lacks a key or holds nonsense is refused here,
    with the key named, rather than failing later inside onnxruntime or numpy.
    """
    if not meta_path.is_file():
        raise _meta_error(meta_path, "missing (it gives the input shape and class names)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _meta_error(meta_path, f"cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise _meta_error(meta_path, "not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise _meta_error(meta_path, f"not valid JSON ({exc.msg} at line {exc.lineno}, "
                                     f"column {exc.colno})") from None

    if not isinstance(meta, dict):
        raise _meta_error(meta_path, f"expected a JSON object, got {type(meta).__name__}")

    def get(dotted: str) -> Any:
        node: Any = meta
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                raise _meta_error(meta_path, f"missing key {dotted!r}")
            node = node[key]
        return node

    task = get("task")
    if task not in ("classification", "reconstruction"):
        raise _meta_error(meta_path, f"'task' is {task!r}, expected 'classification' or "
                                     "'reconstruction'")
    name = get("input.name")
    if not isinstance(name, str) or not name:
        raise _meta_error(meta_path, f"'input.name' is {name!r}, expected a tensor name")
    shape = get("input.shape")
    dims = shape[1:] if isinstance(shape, list) and len(shape) == 4 else None
    if dims is None or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d
                               for d in dims) or dims[0] not in (1, 3) or \
            dims[1] * dims[2] > MAX_PIXELS:
        raise _meta_error(meta_path, f"'input.shape' is {shape!r}, expected [batch, channels, "
                                     "height, width] with 1 or 3 channels and positive sizes")
    classes = get("output.classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or (
            task == "classification" and not classes):
        raise _meta_error(meta_path, f"'output.classes' is {classes!r}, expected a list of "
                                     "class names")
    return name, (dims[0], dims[1], dims[2]), task, classes


def _check_session(model: Path, meta_path: Path, session: Any, name: str,
                   shape: tuple[int, int, int], task: str, classes: list[str]) -> None:
    """model.onnx and model.json must describe the same model (one export wrote both)."""
    def mismatch(what: str) -> InputFileError:
        return InputFileError(f"{model}: {what}, so the two files come from different exports; "
                            f"{REBUILD_EXPORT}")

    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [name]:
        raise mismatch(f"its inputs are {[i.name for i in inputs]}, but {meta_path} says "
                       f"[{name!r}]")
    dims = inputs[0].shape[1:]
    if len(dims) != 3 or any(isinstance(d, int) and d != s for d, s in zip(dims, shape,
                                                                           strict=True)):
        raise mismatch(f"it takes {inputs[0].shape}, but {meta_path} says "
                       f"['batch', {', '.join(map(str, shape))}]")
    out = outputs[0].shape if outputs else []
    if task == "classification" and (len(out) != 2 or (isinstance(out[1], int)
                                                       and out[1] != len(classes))):
        raise mismatch(f"it outputs {out}, but {meta_path} names {len(classes)} classes")


@dataclass(frozen=True)
class OnnxModel:
    """An exported model, opened and checked: the onnxruntime session and its model.json.

    ``litpipe predict`` and the served MLflow model (:mod:`litpipe.tracking.pyfunc`) both
    run the network through this class, so they answer identically.
    """

    path: Path
    session: Any
    input_name: str
    shape: tuple[int, int, int]  # C×H×W
    task: str
    classes: list[str]

    def predict(self, images: np.ndarray) -> Prediction:
        """Run float32 N×C×H×W ``images`` in [0, 1]: class probabilities (softmax of the
        logits) or reconstructions."""
        try:
            out = self.session.run(None, {self.input_name: images})[0]
        except Exception as exc:  # the graph itself fails on valid input: a broken export
            raise InputFileError(f"{self.path}: onnxruntime failed to run it "
                               f"({first_line(exc)}); {REBUILD_EXPORT}") from None
        if self.task == "classification":
            if out.ndim != 2 or out.shape[1] != len(self.classes):
                raise InputFileError(f"{self.path}: output of shape {list(out.shape)} for "
                                   f"{len(self.classes)} classes; {REBUILD_EXPORT}")
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        return Prediction(out, self.classes, self.task, images)


def load_onnx(model: Path) -> OnnxModel:
    """Open ``model`` (an exported ``model.onnx``) with ``model.json`` beside it; every
    problem with either file is a :class:`InputFileError` naming it."""
    import onnxruntime as ort

    meta_path = model.with_name("model.json")
    name, shape, task, classes = _read_meta(meta_path)
    if model.stat().st_size == 0:
        raise InputFileError(f"{model}: empty file (0 bytes), not an ONNX model; "
                           f"{REBUILD_EXPORT}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not ours
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes for every kind of bad file
        reason = first_line(exc).replace(str(model), "the file")
        raise InputFileError(f"{model}: not a loadable ONNX model ({reason}); "
                           f"{REBUILD_EXPORT}") from None
    _check_session(model, meta_path, session, name, shape, task, classes)
    return OnnxModel(model, session, name, shape, task, classes)



def answers(pred: Prediction, source: str) -> list[dict[str, Any]]:
    """Per image: the predicted class, its index and probability, and every class's
    probability (probabilities rounded to 6 decimals); for an autoencoder, the
    reconstruction error. ``source`` names the model in errors."""
    if not np.isfinite(pred.out).all():
        raise InputFileError(f"{source}: the model's outputs are not finite (NaN or infinite "
                           "weights?); retrain it with `dvc repro train`")
    if pred.task == "reconstruction":
        return [{"reconstruction_mse": round(float(((x - x_hat) ** 2).mean()), 6)}
                for x, x_hat in zip(pred.images, pred.out, strict=True)]
    results = []
    for probs in pred.out:
        k = int(np.argmax(probs))
        results.append({
            "class": pred.classes[k],
            "class_index": k,
            "probability": round(float(probs[k]), 6),
            "probabilities": {c: round(float(p), 6) for c, p in zip(pred.classes, probs,
                                                                      strict=True)},
        })
    return results

