"""litpipe: a reproducible DVC + PyTorch Lightning + MLflow pipeline for image classifiers.

Importing the package is cheap on purpose: heavy libraries (torch, lightning, mlflow) are
imported by the modules that need them, so that stages which do not train (download, gate)
start in well under a second.
"""

__version__ = "0.1.0"
