"""The two shapes litpipe writes data in: stable JSON text and flattened ``a.b.c`` keys.

Every JSON file a stage writes (metrics, stats, manifests, model metadata) goes through
:func:`json_text`, so the same data always gives the same bytes, which is what lets DVC's
run-cache, ``dvc metrics diff`` and the gate compare them. :func:`flatten` is the one
flattener behind MLflow param names (``train.lr``), metric names (``test_acc.Bag``) and the
gate's metric keys (``per_class_acc.Bag``).
"""

from __future__ import annotations

import json
from typing import Any


def json_text(obj: Any) -> str:
    """``obj`` as JSON with sorted keys, two-space indent and a final newline."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [2]}`` → ``{"a.b": 1, "c": [2]}``: nested mappings joined by dots.

    Lists and scalars are leaves; an empty mapping disappears (it has no leaf to name).
    """
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
