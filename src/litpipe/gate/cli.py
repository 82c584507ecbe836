"""``litpipe gate``: fail a build when metrics fall below bounds or regress against a baseline.

Exit codes: 0 every rule passes, 1 a rule fails, 2 the gate cannot be evaluated (or, with
``--promote``, the passing model cannot be promoted). See :mod:`litpipe.gate.check` for where
the numbers come from and :mod:`litpipe.gate.promote` for promotion.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from litpipe.errors import LitpipeError
from litpipe.gate.check import GateError, Row, run_gate, verdict_of
from litpipe.gate.report import markdown, text_table
from litpipe.params import load_params


def main(argv: list[str]) -> int:
    """``litpipe gate [options]``; returns the exit code (0 pass, 1 fail, 2 cannot evaluate)."""
    parser = argparse.ArgumentParser(prog="litpipe gate", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml",
                        help="params file with the gates: section, relative to --repo "
                        "(default: params.yaml)")
    parser.add_argument("--repo", type=Path, default=Path("."),
                        help="repository root (default: the current directory)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--baseline", metavar="REV",
                       help="git revision to compare with (default: gates.baseline)")
    group.add_argument("--no-baseline", action="store_true",
                       help="skip the regression rules (max_drop/max_rise)")
    parser.add_argument("--missing-baseline", choices=("pass", "fail"),
                        help="verdict when the baseline is missing (default: "
                        "gates.missing_baseline)")
    parser.add_argument("--markdown", type=Path, metavar="PATH",
                        help="also append a Markdown report to PATH (e.g. "
                        "$GITHUB_STEP_SUMMARY)")
    parser.add_argument("--title", default="Metric gate",
                        help="heading of the Markdown report (default: Metric gate)")
    parser.add_argument("--promote", action="store_true",
                        help="when the gate passes on the default branch (the baseline's), "
                        "move the registry alias 'champion' to the version trained by "
                        "models/run.json's run; refused unless the workspace is committed "
                        "and that run was trained from its commit")
    parser.add_argument("--branch", metavar="NAME",
                        help="the branch being gated, for --promote (default: "
                        "$GITHUB_REF_NAME on GitHub Actions, $CI_COMMIT_BRANCH on GitLab, "
                        "else git's current branch)")
    args = parser.parse_args(argv)
    try:
        if not args.repo.is_dir():
            raise GateError(f"--repo {args.repo}: not a directory")
        params = load_params(args.repo / args.params)
        gates = params.gates
        rev = None if args.no_baseline else (args.baseline or gates.baseline)
        policy = args.missing_baseline or gates.missing_baseline
        task = params.model.task
        rows, note = run_gate(args.repo, gates, task, rev, policy,
                              dataset=params.data.dataset, params_file=args.params)
    except LitpipeError as exc:  # GateError, ParamsError
        print(f"litpipe gate: cannot evaluate: {exc}", file=sys.stderr)
        return 2  # never promotes: nothing was judged
    verdict = verdict_of(rows)
    failed = sum(r.verdict == "FAIL" for r in rows)
    print(f"litpipe gate ({task}; {note}):")
    print(text_table(rows))
    print(f"result: {verdict}" + (f" ({failed} of {len(rows)} checks failed)" if failed else ""))
    if args.markdown:
        about = f"Task: {task}; {note}" + (f"; missing baseline: {policy}" if rev else "")
        try:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            with args.markdown.open("a", encoding="utf-8") as fh:  # append: see --help
                fh.write(markdown(rows, args.title, about))
        except OSError as exc:
            print(f"litpipe gate: cannot write {args.markdown}: {exc}", file=sys.stderr)
            return 2
    code = 1 if verdict == "FAIL" else 0
    if args.promote:
        default = args.baseline or gates.baseline
        code, line = _promotion(args.repo, rows, code, default, args.branch,
                                params.export.registered_model)
        print(f"litpipe gate: {line}", file=sys.stderr if code == 2 else sys.stdout)
        if args.markdown:
            with contextlib.suppress(OSError):  # written once already: reported above if not
                with args.markdown.open("a", encoding="utf-8") as fh:
                    fh.write(f"**Promotion:** {line}\n\n")
    return code


def _promotion(repo: Path, rows: list[Row], code: int, default: str | None,
               branch_arg: str | None, registered_model: str) -> tuple[int, str]:
    """Promote if the gate passed (``code`` 0) on the default branch: (exit code, what
    happened in one line). A failed gate keeps its 1; a failed promotion is 2."""
    from litpipe.gate.promote import branch_of, current_branch, promote

    if code != 0:
        return code, "not promoting: the gate failed"
    if not default:
        return 2, ("cannot promote: no default branch to compare with (gates.baseline is "
                   "null); pass --baseline BRANCH")
    default_branch = branch_of(repo, default)
    branch = current_branch(repo, branch_arg)
    if branch.name != default_branch:
        where = f"on branch {branch.name!r}" if branch.name else "on no branch (detached HEAD)"
        return 0, (f"not promoting: {where} ({branch.source}), not the default branch "
                   f"{default_branch!r}")
    gated = {r.metric: r.value for r in rows if r.value is not None}
    try:
        return 0, promote(repo, registered_model, gated)
    except LitpipeError as exc:
        return 2, f"cannot promote: {' '.join(str(exc).split())}"
