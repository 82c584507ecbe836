"""Labelled image grids cheap enough to draw during training (torchvision + Pillow).

The per-epoch validation pictures in MLflow are drawn here rather than with matplotlib
(:mod:`litpipe.pictures.figures`): ``torchvision.utils.make_grid`` tiles the batch and Pillow writes
the captions, which takes milliseconds instead of the few hundred a matplotlib figure costs
per epoch (``bench/bench_grids.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from litpipe.atomic import atomic_path

TILE = 84  # smallest tile side in pixels: 28×28 images are shown ×3, 8×8 digits ×11
CAPTION = 26  # two lines of Pillow's default font under each tile
PAD = 4
GREEN, RED, WHITE, BLACK = (0, 128, 0), (200, 0, 0), 255, (0, 0, 0)


def _upscale(images: torch.Tensor) -> torch.Tensor:
    """N×C×H×W uint8 → N×3×H'×W' uint8, nearest-neighbour, at least TILE pixels a side."""
    factor = max(1, -(-TILE // max(images.shape[-2:])))  # ceil
    x = images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _save(canvas: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def _with_title(grid: torch.Tensor, title: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """The tiled grid as a Pillow image with a title strip on top."""
    body = Image.fromarray(grid.permute(1, 2, 0).numpy())
    canvas = Image.new("RGB", (body.width, body.height + 18), (WHITE,) * 3)
    canvas.paste(body, (0, 18))
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD, 3), title, fill=BLACK)
    return canvas, draw


def prediction_grid(images: torch.Tensor, true: Sequence[int], pred: Sequence[int],
                    probs: Sequence[float], classes: Sequence[str], path: Path,
                    title: str) -> None:
    """Images with "predicted probability" over "(true)" under each; wrong ones in red."""
    tiles = _upscale(images)
    side = tiles.shape[-1]
    # Room for the caption under each tile: pad the bottom with white before tiling.
    tiles = torch.nn.functional.pad(tiles, (0, 0, 0, CAPTION), value=WHITE)
    nrow = max(1, int(len(tiles) ** 0.5 + 0.999))
    grid = make_grid(tiles, nrow=nrow, padding=PAD, pad_value=WHITE)
    canvas, draw = _with_title(grid, title)
    step_x, step_y = side + PAD, tiles.shape[-2] + PAD
    for i, (t, p, prob) in enumerate(zip(true, pred, probs, strict=True)):
        x = PAD + (i % nrow) * step_x
        y = 18 + PAD + (i // nrow) * step_y + side + 1
        color = GREEN if t == p else RED
        draw.text((x, y), f"{classes[p]} {prob:.2f}"[:16], fill=color)
        draw.text((x, y + 12), f"({classes[t]})"[:16], fill=color)
    _save(canvas, path)


def reconstruction_pairs(images: torch.Tensor, recon: torch.Tensor, path: Path,
                         title: str) -> None:
    """Inputs (uint8) in one row, their reconstructions (floats in [0, 1]) under them."""
    recon_u8 = recon.clamp(0, 1).mul(255).round().to(torch.uint8)
    both = torch.cat([_upscale(images), _upscale(recon_u8)])
    grid = make_grid(both, nrow=len(images), padding=PAD, pad_value=WHITE)
    canvas, _ = _with_title(grid, title)
    _save(canvas, path)
