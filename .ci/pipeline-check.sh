#!/usr/bin/env bash
# The pipeline checks that CI runs after the test suite. .ci/run and the GitHub workflow
# (.github/workflows/pipeline.yml) both call this one script, so they cannot drift apart.
#
#   1. Gate: the committed reports/metrics.json against the target branch's committed
#      metrics (GATE_BASELINE, default main), read from git history by `litpipe gate`. A
#      revision this clone lacks is a missing baseline, judged by gates.missing_baseline.
#      Skipped, saying so, while reports/metrics.json does not exist yet. Then, for the
#      reviewer (they never change the verdict): `dvc metrics diff` and `dvc params diff`
#      against the target as Markdown tables, the committed run's learning curves
#      (reports/curves.png, linked, and its per-epoch numbers as a table), and
#      `dvc plots diff` against the target as HTML in reports/ci/plots/.
#   2. A CI-sized run of the whole pipeline: the work tree's files (tracked, or untracked
#      and not ignored; never data/, models/ or .venv/) copied to a scratch directory,
#      `git init` there, params.ci.yaml as params.yaml (scikit-learn's digits, offline, about
#      a minute on CPU), `dvc repro`, then `litpipe gate --no-baseline` with that file's
#      absolute bounds, and its learning curves. Its reports/ are copied to reports/ci/
#      for upload, pass or fail.
#
# The Markdown report of both goes to reports/gate.md and, under GitHub Actions, is appended
# to $GITHUB_STEP_SUMMARY. Both parts always run; the exit status is non-zero when either
# failed (1: a metric failed its rule; 2: the gate could not be evaluated; else the failing
# command's status).
#
# Environment: GATE_BASELINE (git revision, default main); GITHUB_STEP_SUMMARY (optional);
# PIPELINE_CHECK_SMOKE=0 skips part 2 (the gate's own tests use it; CI never sets it).
# Uses the litpipe and dvc on PATH, or .venv/bin's when no virtual environment is active.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
baseline="${GATE_BASELINE:-main}"
report="$root/reports/gate.md"

section() { printf '\n=== %s\n' "$*"; }

# md_section TITLE CMD...: a Markdown section holding CMD's output (a `--md` table), "No
# change." when it printed nothing, or why it is not available; never fails the script.
md_section() {
  local title=$1 out
  shift
  printf '### %s\n\n' "$title"
  if out=$("$@" 2>&1); then
    if [[ -n "${out//[[:space:]]/}" ]]; then printf '%s\n\n' "$out"; else printf 'No change.\n\n'; fi
  else
    printf 'Not available: `%s` failed: %s\n\n' "$*" "$(printf '%s' "$out" | tail -n 1)"
  fi
}

if [[ -z "${VIRTUAL_ENV:-}" && -x "$root/.venv/bin/litpipe" ]]; then
  export PATH="$root/.venv/bin:$PATH"
fi
for tool in git litpipe; do
  command -v "$tool" >/dev/null 2>&1 \
    || { echo "pipeline-check: '$tool' not found on PATH (run ./setup.sh --dev)" >&2; exit 2; }
done

mkdir -p reports
: > "$report"  # litpipe gate appends; start this run's report empty
rm -rf reports/ci && mkdir -p reports/ci  # this run's CI files only (uploaded, git-ignored)

# --- 1. the committed metrics vs the target branch --------------------------------------
section "1/2 metric gate: reports/metrics.json vs ${baseline}"
gate_status=0
if [[ -f reports/metrics.json ]]; then
  litpipe gate --baseline "$baseline" --markdown "$report" \
    --title "Metric gate: reports/metrics.json vs \`${baseline}\`" || gate_status=$?
else
  echo "skipped: reports/metrics.json does not exist yet (run \`dvc repro\` and commit it);"
  echo "         there are no committed metrics to gate against ${baseline}"
  printf '## Metric gate: skipped\n\n%s\n\n' \
    "\`reports/metrics.json\` does not exist yet: nothing to gate against \`${baseline}\`." \
    >> "$report"
fi
if command -v dvc >/dev/null 2>&1; then
  {
    md_section "Metrics: \`${baseline}\` → this branch (dvc metrics diff)" \
      dvc metrics diff "$baseline" --md
    md_section "Params: \`${baseline}\` → this branch (dvc params diff)" \
      dvc params diff "$baseline" --md
  } >> "$report"
  if dvc plots diff "$baseline" -o reports/ci/plots >/dev/null 2>&1; then
    printf '%s\n\n' "Loss, accuracy and confusion matrix, \`${baseline}\` against this branch:
\`reports/ci/plots/index.html\` (\`dvc plots diff\`) in the uploaded reports." >> "$report"
  fi
else
  printf 'No metrics or params diff: `dvc` not found on PATH.\n\n' >> "$report"
fi
if [[ -f reports/train_history.csv ]]; then
  python -m litpipe.gate.curves reports/train_history.csv --image curves.png \
    --title "Learning curves of the committed run" >> "$report" \
    || echo "pipeline-check: no learning curves in the report (see above)" >&2
fi

# --- 2. a CI-sized run of the whole pipeline -------------------------------------------
smoke_status=0
smoke_result="skipped (PIPELINE_CHECK_SMOKE=0)"
if [[ "${PIPELINE_CHECK_SMOKE:-1}" == 0 ]]; then
  section "2/2 CI-sized pipeline run: skipped (PIPELINE_CHECK_SMOKE=0)"
else
  section "2/2 CI-sized pipeline run: dvc repro with params.ci.yaml in a scratch copy"
  command -v dvc >/dev/null 2>&1 \
    || { echo "pipeline-check: 'dvc' not found on PATH (run ./setup.sh --dev)" >&2; exit 2; }
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/litpipe-ci.XXXXXX")"
  trap 'rm -rf "$scratch"' EXIT
  git ls-files -z --cached --others --exclude-standard \
    | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$scratch"
  echo "scratch copy: $scratch ($(find "$scratch" -type f | wc -l) files)"
  started=$SECONDS
  # A subshell with its own `set -e`, run outside any `||` (which would disable it), so the
  # first failing command ends it and its status is kept for the summary below.
  set +e
  (
    set -euo pipefail
    cd "$scratch"
    unset MLFLOW_TRACKING_URI DVC_ROOT DVC_EXP_NAME  # track into the scratch copy's own DB
    cp params.ci.yaml params.yaml
    rm -rf dvc.lock reports && mkdir reports  # no stale lock or metrics from the real run
    git init -q
    [[ -d .dvc ]] || dvc init -q
    git add -A
    git -c user.name="litpipe CI" -c user.email=ci@litpipe.invalid commit -qm "CI-sized run"
    litpipe validate >/dev/null
    dvc repro
    litpipe gate --params params.yaml --no-baseline --markdown reports/gate.md \
      --title "Metric gate: CI-sized run (params.ci.yaml)"
  )
  smoke_status=$?
  set -e
  smoke_result="exit ${smoke_status} after $((SECONDS - started)) s"
  echo "CI-sized run: ${smoke_result}"
  cp -r "$scratch/reports/." reports/ci/ 2>/dev/null || true
  cp "$scratch/dvc.lock" reports/ci/ 2>/dev/null || true
  if [[ -f reports/ci/gate.md ]]; then
    cat reports/ci/gate.md >> "$report"
    if [[ -f reports/ci/train_history.csv ]]; then
      python -m litpipe.gate.curves reports/ci/train_history.csv --image ci/curves.png \
        --title "Learning curves of the CI-sized run" >> "$report" \
        || echo "pipeline-check: no learning curves in the report (see above)" >&2
    fi
  else
    printf '## CI-sized run: ❌ FAIL\n\n%s\n\n' "The run with params.ci.yaml exited \
${smoke_status} before its gate ran; see the job log." >> "$report"
  fi
fi

if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
  cat "$report" >> "$GITHUB_STEP_SUMMARY"
fi

section "summary"
echo "1/2 metric gate vs ${baseline}: exit ${gate_status}"
echo "2/2 CI-sized run: ${smoke_result}"
echo "Markdown report: reports/gate.md (and reports/ci/ from the CI-sized run)"
if (( gate_status != 0 )); then exit "$gate_status"; fi
if (( smoke_status != 0 )); then exit "$smoke_status"; fi
echo "pipeline checks passed"
