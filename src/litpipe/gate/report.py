"""The gate's report: an aligned table for the terminal, Markdown for CI summaries."""

from __future__ import annotations

from litpipe.gate.check import Row, verdict_of

ICON = {"PASS": "✅", "FAIL": "❌", "SKIP": "➖"}
HEADER = ("metric", "rule", "value", "baseline", "delta", "result")


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.6g}"


def _cells(r: Row) -> tuple[str, ...]:
    delta = "—" if r.delta is None else f"{r.delta:+.6g}"
    return (r.metric, r.rule, _fmt(r.value), _fmt(r.baseline), delta, r.verdict)


def _notes(rows: list[Row]) -> list[tuple[str, list[str]]]:
    """Each distinct note once, with the checks it applies to (a missing baseline explains
    every regression row the same way; saying it once per row buries it)."""
    grouped: dict[str, list[str]] = {}
    for r in rows:
        if r.note:
            grouped.setdefault(r.note, []).append(f"{r.metric} {r.rule}")
    return list(grouped.items())


def text_table(rows: list[Row]) -> str:
    """Aligned plain-text table for the terminal, then one line per note."""
    cells = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(HEADER))).rstrip()
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"note: {note} [{', '.join(checks)}]" for note, checks in _notes(rows)]
    return "\n".join(lines + notes)


def markdown(rows: list[Row], title: str, baseline_line: str) -> str:
    """A Markdown report for ``$GITHUB_STEP_SUMMARY`` or a PR comment.

    Failures are repeated under the table with both values, so the reason is readable in a
    notification that truncates tables.
    """
    verdict = verdict_of(rows)
    out = [f"## {title}: {ICON[verdict]} {verdict}", "", baseline_line, "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        c = list(_cells(r))
        c[0] = f"`{c[0]}`"
        c[-1] = f"{ICON[r.verdict]} {r.verdict}"
        out.append("| " + " | ".join(c) + " |")
    failed = [r for r in rows if r.verdict == "FAIL"]
    if failed:
        out += ["", "**Failed:** " + "; ".join(
            f"`{r.metric}` {r.rule}: {_fmt(r.value)}"
            + (f" vs baseline {_fmt(r.baseline)}" if r.baseline is not None else "")
            + (f" ({r.note})" if r.note else "")
            for r in failed)]
    notes = [f"- {note} ({', '.join(f'`{c}`' for c in checks)})"
             for note, checks in _notes(rows)]
    if notes:
        out += ["", "Notes:", "", *notes]
    return "\n".join(out) + "\n\n"  # a blank line ends the table before the next report
