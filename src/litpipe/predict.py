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
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from litpipe.data.pixels import to_unit_range
from litpipe.errors import InputFileError, LitpipeError
from litpipe.images import MAX_PIXELS, load_images
from litpipe.onnx_model import Prediction, answers, load_onnx
from litpipe.repo import MODELS

DEFAULT_ONNX = MODELS / "export" / "model.onnx"
DEFAULT_CHECKPOINT = MODELS / "best.ckpt"
CHAMPION_URI = "models:/litpipe-classifier@champion"  # the model promoted by `litpipe gate`


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
        raise InputFileError("give at most one of --checkpoint or --onnx")
    if onnx is not None:
        kind, model = "onnx", Path(onnx)
    elif checkpoint is not None:
        kind, model = "checkpoint", Path(checkpoint)
    elif DEFAULT_ONNX.is_file():
        return "onnx", DEFAULT_ONNX
    elif DEFAULT_CHECKPOINT.is_file():
        return "checkpoint", DEFAULT_CHECKPOINT
    else:
        raise InputFileError(f"no model to predict with: neither {DEFAULT_ONNX} nor "
                           f"{DEFAULT_CHECKPOINT} exists under {Path.cwd()}; run `dvc repro` "
                           "(or `dvc pull`) in the repository root, or pass --onnx PATH or "
                           "--checkpoint PATH")
    if not model.is_file():
        raise InputFileError(f"{model}: no such model file (run `dvc repro` or `dvc pull` "
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
        raise InputFileError("no images given")
    if model_uri is not None and (checkpoint is not None or onnx is not None):
        raise InputFileError("give at most one of --model, --checkpoint or --onnx")
    if model_uri is None:
        kind, model = resolve_model(checkpoint, onnx)
    paths = [Path(p) for p in paths]
    for path in paths:  # before loading a model (seconds, with torch): a typo fails at once
        if not path.exists():
            raise InputFileError(f"{path}: no such file")
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
    from litpipe.tracking import models, store

    models.parse_model_uri(model_uri)  # a malformed URI fails before any store is opened
    uri = store.reading_uri()
    store.check_existing_store(uri)
    version = models.resolve(model_uri, uri)
    model_dir = models.download(version, uri, dest)
    local = model_dir / "artifacts" / "model.onnx"
    if not (local.is_file() and local.with_name("model.json").is_file()):
        raise InputFileError(f"{model_uri} ({version}): holds no artifacts/model.onnx and "
                           "model.json, so it is not a model litpipe's export stage "
                           "registered (or one from before it registered servable models); "
                           "name a newer version, or rerun `dvc repro export`")
    return local, f"{version}, run {version.run_id}"



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
