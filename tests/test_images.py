"""litpipe.images: how an image file becomes the network's pixels, whatever its bit depth,
colour type or transparency. (Images refused, and predicting from them: tests/test_predict.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from litpipe.images import read_image
from tests.helpers.images import png_bytes


def to_8bit(v: np.ndarray) -> np.ndarray:
    """round(v * 255 / 65535) in exact integer arithmetic: the scaling predict promises."""
    v = v.astype(np.int64)
    return ((v * 255 * 2 + 65535) // (2 * 65535)).astype(np.uint8)


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 16 * 257, 223 * 257, 65535, 200, 3984, 32896, 65407]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")  # really 16-bit
    got = read_image(tmp_path / "g16.png", (1, 1, 8))[0, 0]
    assert got.tolist() == to_8bit(values[0]).tolist() == [0, 16, 223, 255, 1, 16, 128, 255]


@pytest.mark.parametrize("colour_type", [2, 4, 6], ids=["rgb16", "grey-alpha16", "rgba16"])
def test_16bit_colour_pngs_keep_every_bit(tmp_path: Path, colour_type: int) -> None:
    """Pillow keeps only the high byte of these (3984 would become 15, not 16)."""
    v = np.array([[0, 16 * 257, 223 * 257, 65535, 200, 3984]], np.uint16)
    opaque = np.full_like(v, 65535)
    planes = {2: [v, v, v], 4: [v, opaque], 6: [v, v, v, opaque]}[colour_type]
    (tmp_path / "c16.png").write_bytes(png_bytes(np.stack(planes, -1), colour_type, 16))
    for channels in (1, 3):
        got = read_image(tmp_path / "c16.png", (channels, 1, 6))
        assert got.shape == (channels, 1, 6)
        for plane in got:
            assert plane[0].tolist() == to_8bit(v[0]).tolist() == [0, 16, 223, 255, 1, 16]


def test_transparency_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.array([[[255, 255, 255, 0], [255, 255, 255, 255], [200, 100, 50, 128],
                      [10, 20, 30, 255]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    colour = read_image(tmp_path / "rgba.png", (3, 1, 4))[:, 0].T.tolist()
    assert colour == [[0, 0, 0], [255, 255, 255],
                      [round(200 * 128 / 255), round(100 * 128 / 255), round(50 * 128 / 255)],
                      [10, 20, 30]]
    grey = read_image(tmp_path / "rgba.png", (1, 1, 4))[0, 0].tolist()
    luma = (200 * 299 + 100 * 587 + 50 * 114) / 1000  # Pillow's RGB -> L
    assert grey == [0, 255, round(luma * 128 / 255), round((10 * 299 + 20 * 587 + 30 * 114)
                                                           / 1000)]
    la = np.array([[[255, 0], [255, 255], [100, 51]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png", (1, 1, 3))[0, 0].tolist() == [0, 255, 20]
    # A 16-bit grey+alpha pixel: half-transparent white is mid grey.
    half = np.array([[[65535, 32768], [65535, 0]]], np.uint16)
    (tmp_path / "la16.png").write_bytes(png_bytes(half, 4, 16))
    assert read_image(tmp_path / "la16.png", (1, 1, 2))[0, 0].tolist() == [128, 0]


def test_palette_images(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 1))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255])
    pal.putdata([0, 1, 2, 3])
    pal.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png", (3, 1, 4))[:, 0].T.tolist() == [
        [0, 0, 0], [255, 0, 0], [0, 255, 0], [255, 255, 255]]
    assert read_image(tmp_path / "pal.png", (1, 1, 4))[0, 0].tolist() == [0, 76, 150, 255]
    pal.save(tmp_path / "pal-t.png", transparency=3)  # white is the transparent entry
    assert read_image(tmp_path / "pal-t.png", (1, 1, 4))[0, 0].tolist() == [0, 76, 150, 0]
    # A colour key on a grey image (PNG tRNS) is transparency too.
    Image.fromarray(np.array([[0, 100, 200]], np.uint8)).save(tmp_path / "key.png",
                                                               transparency=100)
    assert read_image(tmp_path / "key.png", (1, 1, 3))[0, 0].tolist() == [0, 0, 200]


def test_8bit_images_read_as_before(tmp_path: Path) -> None:
    """Opaque 8-bit images: Pillow's grey conversion and bilinear resize, unchanged."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    want = np.asarray(Image.fromarray(rgb).convert("L").resize((8, 8),
                                                               Image.Resampling.BILINEAR))
    assert np.array_equal(read_image(tmp_path / "rgb.png", (1, 8, 8))[0], want)
    grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert np.array_equal(read_image(tmp_path / "grey.png", (3, 8, 8)),
                          np.stack([grey] * 3))
