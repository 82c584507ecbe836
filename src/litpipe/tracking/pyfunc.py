"""The served model: an MLflow pyfunc that answers with class names and probabilities.

``mlflow models serve`` on the plain ONNX flavour answers ``{"predictions": {"logits":
[...]}}``: numbers only a litpipe developer can read. This model wraps the same ONNX file
(run by onnxruntime, through :class:`litpipe.predict.OnnxModel`, so the server and
``litpipe predict`` cannot disagree) and answers, per image, what ``litpipe predict``
prints: ``{"class", "class_index", "probability", "probabilities": {name: p}}`` (for an
autoencoder, ``{"reconstruction_mse"}``).

**How it is stored: as code, not as a pickle.** This file is a "models from code" file
(MLflow's recommended way for custom pyfunc models): the export stage logs it by path,
MLflow copies it into the model, and loading the model runs it, which ends in
:func:`mlflow.models.set_model`. The litpipe package goes with it (``code_paths``), so the
model loads in any environment with the packages named in its requirements, and nothing
pickled is ever loaded from the tracking store. The ONNX file and ``model.json`` are the
model's artifacts (``artifacts/model.onnx``, ``artifacts/model.json``).

**Input.** A tensor-based signature: float32 images N×C×H×W with pixels in [0, 1] (the
uint8 value / 255; grey C = 1, RGB C = 3), sent as ``{"inputs": [[[[...]]]]}``. Pixels
outside [0, 1] are refused with HTTP 400: a client sending 0..255 would otherwise get
confident nonsense back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

# Names of the model's artifacts (keys of ``context.artifacts``) and their files.
ONNX_ARTIFACT = "onnx"
META_ARTIFACT = "meta"


class ImageClassifier(PythonModel):
    """The exported ONNX network behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        """Open the ONNX file once per process (the server calls this when it starts).

        ``model.json`` must lie beside ``model.onnx``: :func:`litpipe.predict.load_onnx`
        reads the input shape and class names from it and checks the two agree.
        """
        from litpipe.onnx_model import load_onnx

        onnx_path = Path(context.artifacts[ONNX_ARTIFACT])
        meta_path = Path(context.artifacts[META_ARTIFACT])
        if meta_path != onnx_path.with_name("model.json"):
            raise MlflowException(f"{meta_path}: expected model.json beside {onnx_path}")
        self.model = load_onnx(onnx_path)

    def predict(self, context: Any, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Answer per image: ``[{"class", "class_index", "probability", "probabilities"}]``.

        A list of dicts, which the scoring server returns as ``{"predictions": [...]}``.
        ``model_input`` is an N×C×H×W array (MLflow has already checked it against the
        tensor signature). Its hint is ``np.ndarray`` on purpose: one of the few MLflow
        builds no signature from, so the tensor signature given at logging still parses and
        checks requests; a richer hint would replace it, and none makes MLflow warn
        ("Add type hints to the `predict` method") every time the model is logged or loaded.
        """
        from litpipe.onnx_model import answers

        images = np.asarray(model_input)
        shape = (len(images), *self.model.shape) if images.ndim == 4 else None
        if images.shape != shape:
            raise MlflowException.invalid_parameter_value(
                f"expected images shaped N×{'×'.join(map(str, self.model.shape))} "
                f"(float32, pixels in [0, 1]), got shape {list(images.shape)}")
        images = images.astype(np.float32, copy=False)
        if images.size and not (0.0 <= float(images.min()) and float(images.max()) <= 1.0):
            raise MlflowException.invalid_parameter_value(
                f"pixels must be in [0, 1] (the uint8 value / 255), got "
                f"{float(images.min()):g}..{float(images.max()):g}")
        return answers(self.model.predict(images), source=str(self.model.path))


# Loading the model runs this file; this line hands MLflow the model object.
mlflow.models.set_model(ImageClassifier())
