"""The train stage: Trainer, callbacks and finders, and the MLflow run it opens."""
