"""The pixel contract: images are stored as uint8 and fed to every network as float in [0, 1].

One function does the conversion for numpy arrays (ONNX, predict) and torch tensors
(training, evaluation, export), so the training data, the exported models' inputs and
``litpipe predict`` cannot drift apart. Normalisation by the dataset's mean/std happens
inside the networks, so an exported model needs nothing but this.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

PIXEL_MAX = 255.0  # uint8 white
Images = TypeVar("Images", np.ndarray, Any)  # a numpy array or a torch tensor


def to_unit_range(images: Images) -> Images:
    """uint8 pixels → float32 in [0, 1], as a numpy array or a torch tensor (as given)."""
    if isinstance(images, np.ndarray):
        return images.astype(np.float32) / PIXEL_MAX
    return images.float().div(PIXEL_MAX)
