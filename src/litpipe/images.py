"""Reading image files exactly as the pipeline feeds its networks.

Any format Pillow reads; 16-bit pixels scaled (not clipped) to 8 bit; transparency
composited on black, the background of every dataset litpipe trains on; palette images
expanded; converted to the model's channel count and resized to its input size. An image
that cannot be used (missing, unreadable, float-valued, larger than :data:`MAX_PIXELS`)
raises :class:`~litpipe.errors.InputFileError` naming it.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from litpipe.data.pixels import PIXEL_MAX
from litpipe.errors import InputFileError, first_line

# Largest image accepted, in pixels. Above any photo a user would classify (a 48 MP phone
# picture is 8000×6000), and refused from the header, before any pixel is allocated.
# Pillow's own default only warns up to 179 million pixels: a PNG of a few tens of kB
# claiming 13000×13000 pixels would be decoded into 169 MB (grey) to 676 MB (RGBA).
MAX_PIXELS = 50_000_000
BACKGROUND = 0.0  # transparent pixels become black: the datasets' background (0 = black)
WHITE_16 = 65535  # white of a 16-bit pixel

#
# Pillow, not torchvision.io.decode_image, reads the images. torchvision decodes no faster
# for the small pictures this command sees (docs/performance.md), and costs the torch import
# that the ONNX path otherwise never pays. Pillow also reads the header before decoding, so
# an oversized image is refused before any pixel is allocated (torchvision has no such
# limit); it reads more formats (BMP, TIFF, ...); and it converts palette images correctly,
# where decode_image's UNCHANGED mode returns the packed palette indices of a 2-bit palette
# PNG. The one thing Pillow cannot do is keep 16 bits per channel for colour or grey+alpha
# PNGs (it keeps the high byte, i.e. truncates); only those go to torchvision.io.decode_png,
# after Pillow has checked their size (see _decode_png_16 on torchvision deprecating its
# codecs).

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
    and tests/test_images.py (16-bit colour PNGs) fails once it is not. Its deprecation
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
            why = re.sub(r"^.*\.cpp:\d+, ", "", first_line(exc, 400))
            raise OSError(f"corrupt PNG data: {why}") from None
    return data.numpy().transpose(1, 2, 0)


def _decode(path: Path) -> tuple[np.ndarray, float]:
    """The pixels of ``path`` as H×W×K (K: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) and their
    white level (255 or 65535). Raises what Pillow raises, or InputFileError for a pixel
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
                raise InputFileError(
                    f"{path}: 32-bit integer pixels (range {arr.min()}..{arr.max()}) have no "
                    "defined white level; save it as an 8- or 16-bit image")
            return _channels_last(arr.astype(np.uint16)), float(WHITE_16)
        if mode == "F":
            raise InputFileError(f"{path}: floating-point pixels have no defined white level "
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
    Raises :class:`InputFileError` naming the file for anything it cannot use.
    """
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with _pixel_limit():
            arr, white = _decode(path)
    except InputFileError:
        raise
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: a directory, not an image file") from None
    except PermissionError:
        raise InputFileError(f"{path}: cannot read it (permission denied)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise InputFileError(
            f"{path}: refused: {size}, over the limit of {MAX_PIXELS:,} (a decompression "
            f"bomb, or a picture far larger than the model's {w}×{h} input); scale it down "
            "first") from None
    except UnidentifiedImageError:
        raise InputFileError(f"{path}: not a readable image (not a format Pillow "
                           "recognises)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt data (Pillow: OSError, SyntaxError, EOFError; compressed
        # text chunks too large to expand: ValueError).
        raise InputFileError(f"{path}: not a readable image ({first_line(exc)})") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputFileError(f"{path}: an image with no pixels")
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
