"""The evaluate stage: test metrics, confusion matrix and pictures."""
