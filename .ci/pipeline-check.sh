#!/usr/bin/env bash
# The pipeline checks that CI runs after the test suite; .github/workflows/pipeline.yml runs
# this same script, so local CI and GitHub cannot drift apart.
#   1. Gate: the committed reports/metrics.json against the target branch's (GATE_BASELINE,
#      default main), from git history; the Markdown report goes to $GITHUB_STEP_SUMMARY
#      (or reports/gate.md).
#   2. A CI-sized run of the whole pipeline (params.ci.yaml: scikit-learn's digits, offline,
#      about a minute) in a scratch copy of the work tree, gated by its own absolute bounds;
#      its reports are copied to reports/ci/ for upload.
# Expects litpipe's venv on PATH (. .venv/bin/activate). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
summary="${GITHUB_STEP_SUMMARY:-reports/gate.md}"
baseline="${GATE_BASELINE:-main}"
mkdir -p reports

echo "=== gate: committed metrics vs ${baseline}"
if [[ -f reports/metrics.json ]]; then
  litpipe gate --baseline "$baseline" --markdown "$summary"
else
  echo "reports/metrics.json is not committed yet: nothing to gate against ${baseline}"
fi

echo "=== CI-sized pipeline run (params.ci.yaml)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# The work tree's files that git tracks or would track (not data/, models/, .venv/).
git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$scratch"
(
  cd "$scratch"
  cp params.ci.yaml params.yaml
  rm -f dvc.lock reports/*.json reports/*.csv reports/*.png
  git init -q
  git -c user.name=ci -c user.email=ci@litpipe.invalid add -A
  git -c user.name=ci -c user.email=ci@litpipe.invalid commit -qm "CI-sized run"
  unset MLFLOW_TRACKING_URI  # the smoke run tracks into the scratch copy's own DB
  dvc repro
  litpipe gate --no-baseline --markdown "$summary.ci"
)
mkdir -p reports/ci
cp -r "$scratch"/reports/. reports/ci/
if [[ -f "$summary.ci" ]]; then cat "$summary.ci" >> "$summary" && rm -f "$summary.ci"; fi
echo "=== pipeline checks passed"
