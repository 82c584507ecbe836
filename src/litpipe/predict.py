"""``litpipe predict``: classify image files with the exported ONNX model or a checkpoint.

Which model: ``--onnx PATH``, ``--checkpoint [PATH]`` or ``--model URI`` (a registered
model such as ``models:/litpipe-classifier@champion``, downloaded through MLflow: the ONNX
file and ``model.json`` of the served model) when given; otherwise the export stage's
``models/export/model.onnx`` when it exists (onnxruntime, no torch import: about 15x faster
on 1,000 images than starting torch and Lightning), else ``models/best.ckpt`` (the
LightningModule's ``predict_step`` through ``Trainer.predict``). Paths are relative to the
current directory, i.e. the repository root. Output is JSON.

Images are read as the pipeline feeds the network (see :func:`read_image`): any format
Pillow reads; 16-bit pixels scaled to 8 bit; transparency composited on black, the
background of every dataset litpipe trains on; converted to the model's channel count;
resized to its input size; scaled to [0, 1]. Anything unusable (a missing or unreadable
image, an oversized one, a corrupt model or ``model.json``) ends in one line naming the
file and what is wrong, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from litpipe.data.pixels import PIXEL_MAX, to_unit_range
from litpipe.errors import LitpipeError
from litpipe.repo import MODELS

DEFAULT_ONNX = MODELS / "export" / "model.onnx"
DEFAULT_CHECKPOINT = MODELS / "best.ckpt"
# Largest image accepted, in pixels. Above any photo a user would classify (a 48 MP phone
# picture is 8000×6000), and refused from the header, before any pixel is allocated.
# Pillow's own default only warns up to 179 million pixels: a PNG of a few tens of kB
# claiming 13000×13000 pixels would be decoded into 169 MB (grey) to 676 MB (RGBA).
MAX_PIXELS = 50_000_000
BACKGROUND = 0.0  # transparent pixels become black: the datasets' background (0 = black)
WHITE_16 = 65535  # white of a 16-bit pixel
REBUILD_EXPORT = "rerun `dvc repro export` (or restore it with `dvc pull`)"
CHAMPION_URI = "models:/litpipe-classifier@champion"  # the model promoted by `litpipe gate`


class PredictError(LitpipeError, ValueError):
    """An input or model file cannot be used; the message says which and why."""


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """``exc`` as one short line: libraries' messages can span lines and paragraphs."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


# ------------------------------------------------------------------------------ images
#
# Pillow, not torchvision.io.decode_image, reads the images. Measured here (2 CPU cores,
# 1,000 28×28 PNGs: Pillow 0.11 s, torchvision 0.10 s; a 12 MP photo: Pillow 0.22-0.26 s,
# torchvision 0.15-0.16 s), torchvision decodes no faster for the small pictures this
# command sees, and costs the torch import (4.4 s cold) that the ONNX path otherwise never
# pays. Pillow also reads the header before decoding, so an oversized image is refused
# before any pixel is allocated (torchvision has no such limit); it reads more formats
# (BMP, TIFF, ...); and it converts palette images correctly, where decode_image's
# UNCHANGED mode returns the packed palette indices of a 2-bit palette PNG. The one thing
# Pillow cannot do is keep 16 bits per channel for colour or grey+alpha PNGs (it keeps the
# high byte, i.e. truncates); only those go to torchvision.io.decode_png, after Pillow has
# checked their size (see _decode_png_16 on torchvision deprecating its codecs).

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextlib.contextmanager
def _pixel_limit() -> Iterator[None]:
    """Pillow's decompression-bomb check at :data:`MAX_PIXELS`, always as an error.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and raises only above twice that; here
    the warning is an error too. The global limit is restored on leaving.
    """
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _png_16bit_with_colour_or_alpha(path: Path) -> bool:
    """Whether ``path`` is a PNG with 16 bits per sample and more than one channel.

    Read from the IHDR chunk, which the PNG format puts first: byte 24 is the bit depth,
    byte 25 the colour type (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA).
    """
    with path.open("rb") as fh:
        head = fh.read(26)
    return (len(head) == 26 and head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR"
            and head[24] == 16 and head[25] in (2, 4, 6))


def _decode_png_16(path: Path) -> np.ndarray | None:
    """A 16-bit PNG's samples, H×W×K uint16, via torchvision (None if it has no decoder).

    torchvision 0.29 deprecates its image codecs in favour of TorchCodec, which litpipe
    does not install; pyproject.toml pins torchvision below 0.30, so the decoder is there,
    and tests/test_predict.py (16-bit colour PNGs) fails once it is not. Its deprecation
    warning is silenced: it concerns litpipe's maintainers, not the user classifying images.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from torchvision.io import ImageReadMode, decode_png, read_file
        except ImportError:
            return None
        try:
            data = decode_png(read_file(str(path)), mode=ImageReadMode.UNCHANGED)
        except RuntimeError as exc:  # libpng's complaint, after the C++ source location
            why = re.sub(r"^.*\.cpp:\d+, ", "", _first_line(exc, 400))
            raise OSError(f"corrupt PNG data: {why}") from None
    return data.numpy().transpose(1, 2, 0)


def _decode(path: Path) -> tuple[np.ndarray, float]:
    """The pixels of ``path`` as H×W×K (K: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) and their
    white level (255 or 65535). Raises what Pillow raises, or PredictError for a pixel
    format without a defined white level."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:  # reads the header only; the size check happens here
        if img.format == "PNG" and _png_16bit_with_colour_or_alpha(path):
            exact = _decode_png_16(path)
            if exact is not None:
                return exact, float(WHITE_16)
            # No torchvision PNG decoder: Pillow's 8 bits below (each sample's high byte).
        img = ImageOps.exif_transpose(img)  # a phone photo shot sideways, turned upright
        mode = img.mode
        if mode in ("L", "LA", "RGB", "RGBA") and "transparency" not in img.info:
            return _channels_last(np.asarray(img)), PIXEL_MAX
        if mode in ("L", "RGB", "P", "PA"):
            # A palette, or a colour key (tRNS): Pillow expands it, with its transparency.
            has_alpha = mode == "PA" or "transparency" in img.info
            converted = img.convert("RGBA" if has_alpha else "RGB")
            return np.asarray(converted), PIXEL_MAX
        if mode == "1":
            return _channels_last(np.asarray(img.convert("L"))), PIXEL_MAX
        if mode.startswith("I;16"):  # 16-bit grey (Pillow keeps every bit of it)
            return _channels_last(np.asarray(img).astype(np.uint16)), float(WHITE_16)
        if mode == "I":
            arr = np.asarray(img)
            if arr.size and (arr.min() < 0 or arr.max() > WHITE_16):
                raise PredictError(
                    f"{path}: 32-bit integer pixels (range {arr.min()}..{arr.max()}) have no "
                    "defined white level; save it as an 8- or 16-bit image")
            return _channels_last(arr.astype(np.uint16)), float(WHITE_16)
        if mode == "F":
            raise PredictError(f"{path}: floating-point pixels have no defined white level "
                               "(0..1? 0..255?); save it as an 8- or 16-bit image")
        # CMYK, YCbCr, LAB, HSV, premultiplied RGBa/La, ...: Pillow converts them.
        has_alpha = "A" in mode or "a" in mode
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB")), PIXEL_MAX


def _channels_last(arr: np.ndarray) -> np.ndarray:
    return arr[:, :, None] if arr.ndim == 2 else arr


def _to_8bit(arr: np.ndarray, white: float) -> np.ndarray:
    """H×W×K pixels at ``white`` → H×W×(1 or 3) uint8, alpha composited on :data:`BACKGROUND`.

    One rounding at the end: a 16-bit value v becomes round(v * 255 / 65535) (0, 4112,
    57311 → 0, 16, 223), and colour c under alpha a becomes round(c * a + BACKGROUND *
    (1 - a)) with a in [0, 1]. Exact halves cannot occur for integer inputs, so numpy's
    round-half-to-even never decides anything.
    """
    k = arr.shape[2]
    if k in (1, 3) and arr.dtype == np.uint8:
        return arr  # 8-bit, opaque: already what the network is fed
    unit = arr.astype(np.float64) / white
    if k in (2, 4):
        colour, alpha = unit[:, :, : k - 1], unit[:, :, k - 1:]
        unit = colour * alpha + BACKGROUND * (1.0 - alpha)
    return np.rint(unit * PIXEL_MAX).astype(np.uint8)


def read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """Read image file ``path`` as a C×H×W uint8 array for a model whose input is ``shape``.

    Opaque 8-bit grey or RGB images take Pillow's grey conversion and bilinear resize, as
    they always have in litpipe. 16-bit images are scaled, not clipped; transparency is
    composited on black; colour becomes grey with Pillow's ITU-R 601-2 luma (and grey
    becomes colour by repeating it) to match the model.
    Raises :class:`PredictError` naming the file for anything it cannot use.
    """
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with _pixel_limit():
            arr, white = _decode(path)
    except PredictError:
        raise
    except FileNotFoundError:
        raise PredictError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PredictError(f"{path}: a directory, not an image file") from None
    except PermissionError:
        raise PredictError(f"{path}: cannot read it (permission denied)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise PredictError(
            f"{path}: refused: {size}, over the limit of {MAX_PIXELS:,} (a decompression "
            f"bomb, or a picture far larger than the model's {w}×{h} input); scale it down "
            "first") from None
    except UnidentifiedImageError:
        raise PredictError(f"{path}: not a readable image (not a format Pillow "
                           "recognises)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt data (Pillow: OSError, SyntaxError, EOFError; compressed
        # text chunks too large to expand: ValueError).
        raise PredictError(f"{path}: not a readable image ({_first_line(exc)})") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise PredictError(f"{path}: an image with no pixels")
    pixels = _to_8bit(arr, white)
    if c == 1 and pixels.shape[2] == 3:
        pixels = _channels_last(np.asarray(Image.fromarray(pixels).convert("L")))
    elif c == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    if pixels.shape[:2] != (h, w):
        img = Image.fromarray(pixels[:, :, 0] if c == 1 else pixels)
        pixels = _channels_last(np.asarray(img.resize((w, h), Image.Resampling.BILINEAR)))
    return pixels.transpose(2, 0, 1)


def load_images(paths: list[Path], shape: tuple[int, int, int]) -> np.ndarray:
    """Read ``paths`` into an N×C×H×W uint8 array matching the model's input ``shape``."""
    out = np.empty((len(paths), *shape), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = read_image(Path(path), shape)
    return out


# ------------------------------------------------------------------------------ models

@dataclass(frozen=True)
class Prediction:
    """A model's raw answer for a batch: probabilities (or reconstructions), and context."""

    out: np.ndarray
    classes: list[str]
    task: str
    images: np.ndarray  # what the model was fed, float32 in [0, 1]


def _from_checkpoint(ckpt: Path, paths: list[Path]) -> Prediction:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from litpipe.model.checkpoint import load_module

    module = load_module(ckpt)
    shape = tuple(module.hparams["in_shape"])
    images = to_unit_range(torch.from_numpy(load_images(paths, shape)))
    # Lightning announces devices and tips at INFO level on stderr; stdout holds the JSON,
    # stderr should hold only what the user must read.
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False)
        batches = trainer.predict(module, DataLoader(images, batch_size=256))
    finally:
        log.setLevel(level)
    return Prediction(torch.cat(batches).numpy(), module.classes, module.task, images.numpy())


def _meta_error(meta_path: Path, problem: str) -> PredictError:
    return PredictError(f"{meta_path}: {problem}; it is written next to model.onnx by the "
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
    def mismatch(what: str) -> PredictError:
        return PredictError(f"{model}: {what}, so the two files come from different exports; "
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
            raise PredictError(f"{self.path}: onnxruntime failed to run it "
                               f"({_first_line(exc)}); {REBUILD_EXPORT}") from None
        if self.task == "classification":
            if out.ndim != 2 or out.shape[1] != len(self.classes):
                raise PredictError(f"{self.path}: output of shape {list(out.shape)} for "
                                   f"{len(self.classes)} classes; {REBUILD_EXPORT}")
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        return Prediction(out, self.classes, self.task, images)


def load_onnx(model: Path) -> OnnxModel:
    """Open ``model`` (an exported ``model.onnx``) with ``model.json`` beside it; every
    problem with either file is a :class:`PredictError` naming it."""
    import onnxruntime as ort

    meta_path = model.with_name("model.json")
    name, shape, task, classes = _read_meta(meta_path)
    if model.stat().st_size == 0:
        raise PredictError(f"{model}: empty file (0 bytes), not an ONNX model; "
                           f"{REBUILD_EXPORT}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not ours
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes for every kind of bad file
        reason = _first_line(exc).replace(str(model), "the file")
        raise PredictError(f"{model}: not a loadable ONNX model ({reason}); "
                           f"{REBUILD_EXPORT}") from None
    _check_session(model, meta_path, session, name, shape, task, classes)
    return OnnxModel(model, session, name, shape, task, classes)


def _from_onnx(model: Path, paths: list[Path]) -> Prediction:
    onnx_model = load_onnx(model)
    return onnx_model.predict(to_unit_range(load_images(paths, onnx_model.shape)))


def resolve_model(checkpoint: Path | None = None, onnx: Path | None = None
                  ) -> tuple[str, Path]:
    """``("onnx" | "checkpoint", path)``: the model ``litpipe predict`` uses.

    An explicit path wins; otherwise the exported ONNX model when it exists (the fast
    path), else the best checkpoint.
    """
    if checkpoint is not None and onnx is not None:
        raise PredictError("give at most one of --checkpoint or --onnx")
    if onnx is not None:
        kind, model = "onnx", Path(onnx)
    elif checkpoint is not None:
        kind, model = "checkpoint", Path(checkpoint)
    elif DEFAULT_ONNX.is_file():
        return "onnx", DEFAULT_ONNX
    elif DEFAULT_CHECKPOINT.is_file():
        return "checkpoint", DEFAULT_CHECKPOINT
    else:
        raise PredictError(f"no model to predict with: neither {DEFAULT_ONNX} nor "
                           f"{DEFAULT_CHECKPOINT} exists under {Path.cwd()}; run `dvc repro` "
                           "(or `dvc pull`) in the repository root, or pass --onnx PATH or "
                           "--checkpoint PATH")
    if not model.is_file():
        raise PredictError(f"{model}: no such model file (run `dvc repro` or `dvc pull` "
                           "first)")
    return kind, model


def predict(paths: list[Path], checkpoint: Path | None = None, onnx: Path | None = None,
            model_uri: str | None = None) -> list[dict[str, Any]]:
    """One result per image: predicted class and all class probabilities (or recon error).

    The model is ``model_uri`` (a registered model, ``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION``) when given, else the one :func:`resolve_model` chooses.
    Raises a :class:`~litpipe.errors.LitpipeError` naming the file or URI for any unusable
    input.
    """
    return _run(paths, checkpoint, onnx, model_uri)[0]


def _run(paths: list[Path], checkpoint: Path | None, onnx: Path | None,
         model_uri: str | None) -> tuple[list[dict[str, Any]], str]:
    """:func:`predict`'s results, and a few words saying which model gave them."""
    if not paths:
        raise PredictError("no images given")
    if model_uri is not None and (checkpoint is not None or onnx is not None):
        raise PredictError("give at most one of --model, --checkpoint or --onnx")
    if model_uri is None:
        kind, model = resolve_model(checkpoint, onnx)
    paths = [Path(p) for p in paths]
    for path in paths:  # before loading a model (seconds, with torch): a typo fails at once
        if not path.exists():
            raise PredictError(f"{path}: no such file")
    if model_uri is not None:
        with tempfile.TemporaryDirectory(prefix="litpipe-model-") as tmp:
            local, version = _fetch_registered(model_uri, Path(tmp))
            pred = _from_onnx(local, paths)
        source, about = model_uri, f"registry model {model_uri} ({version})"
    else:
        pred = _from_onnx(model, paths) if kind == "onnx" else _from_checkpoint(model, paths)
        source, about = str(model), f"{kind} model {model}"
    results = [{"file": str(path), **answer}
               for path, answer in zip(paths, answers(pred, source), strict=True)]
    return results, about


def _fetch_registered(model_uri: str, dest: Path) -> tuple[Path, str]:
    """Download the registered model ``model_uri`` names into ``dest``: the local path of
    its ``model.onnx`` (``model.json`` beside it) and which version it is.

    The store is the pipeline's (``$MLFLOW_TRACKING_URI``, else ``tracking.uri`` in
    params.yaml, else ``mlflow.db`` at the repository root).
    """
    from litpipe.tracking import registry

    registry.parse_model_uri(model_uri)  # a malformed URI fails before any store is opened
    uri = registry.reading_uri()
    registry.check_existing_store(uri)
    version = registry.resolve(model_uri, uri)
    model_dir = registry.download(version, uri, dest)
    local = model_dir / "artifacts" / "model.onnx"
    if not (local.is_file() and local.with_name("model.json").is_file()):
        raise PredictError(f"{model_uri} ({version}): holds no artifacts/model.onnx and "
                           "model.json, so it is not a model litpipe's export stage "
                           "registered (or one from before it registered servable models); "
                           "name a newer version, or rerun `dvc repro export`")
    return local, f"{version}, run {version.run_id}"


def answers(pred: Prediction, source: str) -> list[dict[str, Any]]:
    """Per image: the predicted class, its index and probability, and every class's
    probability (probabilities rounded to 6 decimals); for an autoencoder, the
    reconstruction error. ``source`` names the model in errors."""
    if not np.isfinite(pred.out).all():
        raise PredictError(f"{source}: the model's outputs are not finite (NaN or infinite "
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


# -------------------------------------------------------------------------------- CLI

EPILOG = f"""\
model: --onnx PATH, or --checkpoint [PATH] ({DEFAULT_CHECKPOINT} if no PATH), or
  --model URI (a registered model: models:/NAME@ALIAS, e.g. {CHAMPION_URI}, or
  models:/NAME/VERSION; downloaded through MLflow from $MLFLOW_TRACKING_URI, else
  tracking.uri in params.yaml, else mlflow.db at the repository root); by default
  {DEFAULT_ONNX} when it exists (onnxruntime, fast), else {DEFAULT_CHECKPOINT}.
  Paths are relative to the current directory (the repository root).
images: any format Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP, ...), resized to the
  model's input. 16-bit images are scaled to 8 bit; transparent pixels are composited
  on a black background (the datasets' background); colour becomes grey for grey models;
  images over {MAX_PIXELS:,} pixels are refused.
Any unusable image or model file ends in one line naming it, and exit status 2.
"""


def _is_image_name(path: Path) -> bool:
    """Whether ``path`` has the extension of an image format Pillow reads."""
    from PIL import Image

    return path.suffix.lower() in Image.registered_extensions()


def main(argv: list[str]) -> int:
    summary = __doc__.split("\n")[0].split(": ", 1)[1]  # the docstring's first line, sans name
    parser = argparse.ArgumentParser(prog="litpipe predict", description=summary,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path, help="image files")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", nargs="?", const=DEFAULT_CHECKPOINT, type=Path,
                     metavar="PATH", help=f"a Lightning checkpoint (default {DEFAULT_CHECKPOINT})")
    src.add_argument("--onnx", type=Path, metavar="PATH", help="an exported model.onnx")
    src.add_argument("--model", metavar="URI",
                     help=f"a registered model, e.g. {CHAMPION_URI} or models:/NAME/VERSION")
    args = parser.parse_args(argv)
    if args.checkpoint is not None and _is_image_name(args.checkpoint):
        # `litpipe predict --checkpoint shirt.png`: the optional PATH took the image.
        args.images.insert(0, args.checkpoint)
        args.checkpoint = DEFAULT_CHECKPOINT
    if not args.images:
        parser.error("give at least one image file")
    try:
        results, about = _run(args.images, args.checkpoint, args.onnx, args.model)
    except LitpipeError as exc:
        message = " ".join(str(exc).split("\n"))  # one line, whatever raised it
        print(f"litpipe predict: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("litpipe predict: error: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    # Which model answered, on stderr (after the fact, so a failure stays one line).
    print(f"litpipe predict: {about}", file=sys.stderr)
    print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return 0
