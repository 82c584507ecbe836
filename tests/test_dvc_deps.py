"""dvc.yaml's code deps are complete: each stage lists every litpipe module it imports.

A module missing from a stage's ``deps`` would let a code change through without a rerun,
so cached outputs would no longer match the code. The imports are read from the source
(every ``import`` statement, including those inside functions, which a stage only runs
later), starting at ``stages/<name>.py`` and following litpipe's own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers.repo import ROOT

SRC = ROOT / "src"


def _module_file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """litpipe modules ``path`` imports anywhere, with their parent packages."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from litpipe.data import split` imports the module litpipe.data.split.
            names |= {f"{node.module}.{a.name}" for a in node.names
                      if _module_file(f"{node.module}.{a.name}")}
    out = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "litpipe":
            out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return out


def stage_code_files(entry: Path) -> set[str]:
    """Every litpipe source file reachable by imports from ``entry``, repo-relative."""
    files: set[str] = set()
    seen: set[str] = set()
    todo = [entry]
    while todo:
        for module in _imported_modules(todo.pop()) - seen:
            seen.add(module)
            path = _module_file(module)
            if path is not None:
                files.add(path.relative_to(ROOT).as_posix())
                todo.append(path)
    return files


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_list_every_imported_module(stage: str) -> None:
    spec = _stages()[stage]
    entry = ROOT / "stages" / f"{stage}.py"
    assert spec["cmd"] == f"python stages/{stage}.py"
    deps = set(spec["deps"])
    needed = stage_code_files(entry) | {f"stages/{stage}.py"}
    missing = sorted(needed - deps)
    assert not missing, f"dvc.yaml stage {stage!r} misses deps: {missing}"
    # A dep on code the stage does not import reruns it for nothing.
    unused = sorted(d for d in deps - needed if d.startswith(("src/", "stages/")))
    assert not unused, f"dvc.yaml stage {stage!r} lists code it does not import: {unused}"


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The checker itself: a lazy import (inside a function) still counts."""
    entry = tmp_path / "entry.py"
    entry.write_text("def f():\n    from litpipe.tracking.run import TrackedRun\n")
    assert "src/litpipe/tracking/run.py" in stage_code_files(entry)
    assert "src/litpipe/schema.py" in stage_code_files(entry)  # tracking imports the schema
