"""litpipe: a reproducible DVC + PyTorch Lightning + MLflow pipeline for image classifiers.

Importing the package is cheap on purpose: heavy libraries (torch, lightning, mlflow) are
imported by the modules that need them, so that stages which do not train (download, gate)
start in well under a second.

It does one thing on import: usage telemetry is turned off unless the user chose otherwise.
MLflow 3 and ONNX Runtime (its official Linux wheels, since 1.29) report usage to their makers
by default, and each decides once, when it is first imported or initialised. Every stage, the
``litpipe`` command and the served model import this package before any module that imports
them, so the defaults set here are in place in time. A template that teams copy should not
report on their behalf; the user's own setting wins (``MLFLOW_DISABLE_TELEMETRY=false``,
``ORT_DISABLE_TELEMETRY=0``; README, "Telemetry"). DVC's analytics are off in ``.dvc/config``.
"""

import os as _os

for _name, _off in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("ORT_DISABLE_TELEMETRY", "1")):
    _os.environ.setdefault(_name, _off)

__version__ = "0.1.0"
