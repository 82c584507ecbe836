"""``litpipe predict``: classify image files with a checkpoint or the exported ONNX model.

Images are read with Pillow, converted to the model's channel count (grey or RGB), resized to
its input size and scaled to [0, 1], exactly as the pipeline feeds the network. With a
checkpoint the LightningModule's ``predict_step`` runs through ``Trainer.predict``; with an
ONNX file, onnxruntime runs it (no torch needed for the model itself). Output is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from litpipe.data.pixels import to_unit_range
from litpipe.errors import LitpipeError


class PredictError(LitpipeError, ValueError):
    """An input or model file cannot be used; the message says which and why."""


def load_images(paths: list[Path], shape: tuple[int, int, int]) -> np.ndarray:
    """Read ``paths`` into an N×C×H×W uint8 array matching the model's input ``shape``."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    out = np.empty((len(paths), c, h, w), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                img = img.convert("L" if c == 1 else "RGB")
                if img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
        except FileNotFoundError:
            raise PredictError(f"{path}: no such file") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise PredictError(f"{path}: not a readable image ({exc})") from None
        out[i] = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return out


def _from_checkpoint(ckpt: Path, paths: list[Path]) -> tuple[np.ndarray, list[str], str]:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from litpipe.model.module import load_module

    module = load_module(ckpt)
    shape = tuple(module.hparams["in_shape"])
    images = to_unit_range(torch.from_numpy(load_images(paths, shape)))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    batches = trainer.predict(module, DataLoader(images, batch_size=256))
    task = module.task
    return torch.cat(batches).numpy(), module.classes, task


def _from_onnx(model: Path, paths: list[Path]) -> tuple[np.ndarray, list[str], str]:
    import onnxruntime as ort

    meta_path = model.with_name("model.json")
    if not meta_path.exists():
        raise PredictError(f"{meta_path}: missing; it is written next to model.onnx by the "
                           "export stage and gives the input shape and class names")
    meta = json.loads(meta_path.read_text())
    shape = tuple(int(v) for v in meta["input"]["shape"][1:])
    images = to_unit_range(load_images(paths, shape))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = session.run(None, {meta["input"]["name"]: images})[0]
    task = meta.get("task", "classification")
    if task == "classification":
        e = np.exp(out - out.max(axis=1, keepdims=True))
        out = e / e.sum(axis=1, keepdims=True)
    return out, list(meta["output"].get("classes", [])), task


def predict(paths: list[Path], checkpoint: Path | None = None, onnx: Path | None = None
            ) -> list[dict[str, Any]]:
    """One result per image: predicted class and all class probabilities (or recon error)."""
    if (checkpoint is None) == (onnx is None):
        raise PredictError("give exactly one of --checkpoint or --onnx")
    model = checkpoint or onnx
    assert model is not None
    if not model.is_file():
        raise PredictError(f"{model}: no such model file (run `dvc repro` first)")
    if checkpoint is not None:
        out, classes, task = _from_checkpoint(checkpoint, paths)
    else:
        out, classes, task = _from_onnx(model, paths)
    results = []
    if task == "reconstruction":
        images = to_unit_range(load_images(paths, tuple(out.shape[1:])))
        for path, x, x_hat in zip(paths, images, out, strict=True):
            results.append({"file": str(path),
                            "reconstruction_mse": round(float(((x - x_hat) ** 2).mean()), 6)})
        return results
    for path, probs in zip(paths, out, strict=True):
        k = int(np.argmax(probs))
        results.append({
            "file": str(path),
            "class": classes[k],
            "class_index": k,
            "probability": round(float(probs[k]), 6),
            "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probs,
                                                                      strict=True)},
        })
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="litpipe predict", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", type=Path, help="PNG/JPEG files")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="a Lightning checkpoint (.ckpt)")
    src.add_argument("--onnx", type=Path, help="an exported model.onnx")
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.onnx is None:
        args.checkpoint = Path("models/best.ckpt")
    try:
        results = predict(args.images, checkpoint=args.checkpoint, onnx=args.onnx)
    except PredictError as exc:
        print(f"litpipe predict: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return 0
