"""Reading ``params.yaml``: YAML in, a validated :class:`~litpipe.schema.Params` out.

Anything wrong (no file, not YAML, empty, not a mapping, an unknown, missing or
out-of-range key) is a :class:`ParamsError` whose message names every bad key, one line
each, with the value and what is allowed; nothing here imports torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from litpipe.errors import LitpipeError
from litpipe.schema import Params

MAX_BYTES = 1 << 20  # a params file is a few kilobytes; more is a mistake, refused unread


class ParamsError(LitpipeError):
    """``params.yaml`` is missing, unreadable or invalid; the message says where and why."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    PyYAML keeps the last value silently, while DVC refuses the file: the value a run used
    would not be the one a reader of the file sees first.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (lines {seen[key]} and {line}); "
                    "keep one", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``: one line for every way it cannot be read."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ParamsError(f"{path}: {size:,} bytes, more than the {MAX_BYTES:,} a params "
                              "file may hold; is it the right file?")
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot read it ({exc})") from None
    except yaml.constructor.ConstructorError as exc:
        where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        raise ParamsError(f"{path}: {where}{exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None


_UNION_TAG = re.compile(r"^(int|float|bool|str|none|constrained-\w+|[\w-]+\[.*\])$")


def _format_errors(err: ValidationError, source: Path) -> str:
    """One line per bad key: ``path = value: what is allowed``.

    Union alternatives (``lr: 0.01 | auto``) are merged into one line, and pydantic's
    internal tags (``constrained-float``, ``literal['auto']``) are dropped from the path.
    """
    grouped: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not _UNION_TAG.match(str(p))) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against params.yaml's comments)"
        elif e["type"] == "missing":
            msg = "missing: every knob must be set in params.yaml"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if not isinstance(e.get("input"), dict | list):
                values[loc] = e.get("input")
        if msg not in grouped.setdefault(loc, []):
            grouped[loc].append(msg)
    lines = [f"{source}: {len(grouped)} invalid value(s):"]
    for loc, msgs in grouped.items():
        shown = f" = {values[loc]!r}" if loc in values else ""
        lines.append(f"  - {loc}{shown}: {' or '.join(msgs)}")
    return "\n".join(lines)


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None
                ) -> Params:
    """Read and validate ``path``; raise :class:`ParamsError` naming every bad key.

    ``overrides`` (``{"optimizer.lr": 0.01}``) replace values after reading, as
    ``dvc exp run -S`` does; tests use them to derive small configs from the real file.
    """
    path = Path(path)
    raw = _read_yaml(path)
    if raw is None:
        raise ParamsError(f"{path}: empty; it must hold every section of litpipe's params "
                          "(restore it with `git checkout -- params.yaml`)")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections, got "
                          f"{type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, path)) from None
