"""Two runs compared in the MLflow UI, checked as a user sees them, in headless Chromium.

The point of logging every param and metric is that a user can put two runs side by side
and see what differed and what it did. The REST API can say the data is stored; only the
browser can say the React UI renders it. So: two digits runs differing only in `optimizer.lr`
go into one tracking DB, `mlflow server` serves it on loopback, and Selenium drives Debian's
Chromium to the experiment's compare-runs view. Read from the rendered page: both run ids
and names, a `optimizer.lr` row (the only one left under "Show diff only") with each run's
value, and a `test_acc` row with each run's value, each in its run's column. The screenshot
goes to reports/mlflow_compare.png (saved before the assertions, so a failure can be seen).

Skipped, saying why, without Chromium, chromedriver or selenium.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.browser import CHROMEDRIVER, CHROMIUM, skip_reason
from tests.helpers.repo import ROOT

pytestmark = pytest.mark.e2e

SCREENSHOT = ROOT / "reports/mlflow_compare.png"
LRS = ("0.002", "0.01")  # test_acc 0.947 vs 0.958 on digits (seed 42): the page must differ
PAGE_DEADLINE_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """Two in-process train + evaluate runs into one SQLite store; only ``optimizer.lr`` differs.

    The stage functions run in ``base`` with ``DVC_ROOT=base``, so the experiment's artifact
    root is ``base/mlartifacts`` and nothing lands in the developer's repository.
    """
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from litpipe.data.split import split as split_stage
    from litpipe.evaluation.evaluate import evaluate as evaluate_stage
    from litpipe.params import load_params
    from litpipe.training.train import train as train_stage

    base = tmp_path_factory.mktemp("ui")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, base / name)
    (base / "data/raw/digits").mkdir(parents=True)
    db = f"sqlite:///{base / 'mlflow.db'}"
    runs: list[dict[str, Any]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        mp.setenv("DVC_ROOT", str(base))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for lr in LRS:
            params = load_params(base / "params.yaml", overrides={
                "data.dataset": "digits", "data.val_size": 200, "trainer.max_epochs": 2,
                "data.batch_size": 64, "trainer.enable_progress_bar": False,
                "optimizer.lr": float(lr),
                "callbacks.val_image_samples": 0, "tracking.uri": db, "evaluate.samples": 4})
            processed = base / "data/processed"
            if not runs:
                split_stage(params, base / "data/raw", processed)
            out = base / f"lr{lr}"
            summary = train_stage(params, processed, out / "models", out / "reports")
            evaluate_stage(params, processed, out / "models", out / "reports")
            metrics = json.loads((out / "reports/metrics.json").read_text())
            runs.append({"run_id": summary["run_id"], "lr": lr, "test_acc": metrics["test_acc"]})
    assert list((base / "mlartifacts").iterdir()), "artifacts not in the test's own store"
    return base, runs


@pytest.fixture(scope="module")
def ui(two_runs: tuple[Path, list[dict[str, Any]]]) -> Iterator[str]:
    """`mlflow server` on the runs' DB, on a free loopback port; its process group is ended
    at teardown, and by its own watchdog if this pytest process dies first."""
    base, _ = two_runs
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    server = [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
              "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    watchdog = ('"$@" & while kill -0 "$OWNER" 2>/dev/null && kill -0 $! 2>/dev/null; '
                'do sleep 1; done; kill -TERM -- -$$')
    log = open(base / "mlflow-server.log", "wb")
    proc = subprocess.Popen(["bash", "-c", watchdog, "watchdog", *server], cwd=base,
                            env={**os.environ, "OWNER": str(os.getpid())},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("mlflow server did not answer /health:\n"
                                     + (base / "mlflow-server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


# Reads the compare page's three parts from the DOM: the run-details table, the parameters
# table (the first table after the "Parameters - Show diff only" switch) and the metrics,
# which MLflow renders as two virtualised grids (keys | values, cells placed by top/left).
READ_PAGE_JS = """
const follows = (a, b) => a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING;
const rows = t => [...t.querySelectorAll('tr')].map(
  tr => [...tr.querySelectorAll('th,td')].map(c => c.innerText.trim()));
const details = document.querySelector('table.mlflow-compare-run-table');
const pSwitch = document.querySelector('[aria-label="Parameters - Show diff only"]');
const mSwitch = document.querySelector('[aria-label="Metrics - Show diff only"]');
const params = pSwitch && [...document.querySelectorAll('table')].find(t => follows(pSwitch, t));
const grids = mSwitch ? [...document.querySelectorAll('.ReactVirtualized__Grid')]
  .filter(g => follows(mSwitch, g)) : [];
const metrics = {};
if (grids.length >= 2) {
  const cells = g => [...g.querySelectorAll('.ReactVirtualized__Grid__innerScrollContainer > div')]
    .map(c => ({top: c.style.top, left: parseFloat(c.style.left), text: c.innerText.trim()}));
  const values = cells(grids[1]);
  for (const k of cells(grids[0])) {
    metrics[k.text] = values.filter(v => v.top === k.top).sort((a, b) => a.left - b.left)
      .map(v => v.text);
  }
}
return {details: details ? rows(details) : [], params: params ? rows(params) : [], metrics,
        paramsDiffOnly: pSwitch ? pSwitch.getAttribute('aria-checked') : null,
        text: document.body.innerText};
"""


def row(table: list[list[str]], key: str) -> list[str] | None:
    """The cells after the header cell ``key`` in a table read by READ_PAGE_JS."""
    return next((r[1:] for r in table if r and r[0] == key), None)


def wait_for(driver: Any, ready: Any, what: str) -> dict[str, Any]:
    """Poll the page until ``ready(page)`` holds (the SPA renders in steps); return the page.

    Rows of the metrics grid outside its 300 px window are not rendered: while ``test_acc``
    is not among them, the grid is scrolled on a little per poll.
    """
    deadline = time.monotonic() + PAGE_DEADLINE_S
    page: dict[str, Any] = {}
    while time.monotonic() < deadline:
        page = driver.execute_script(READ_PAGE_JS)
        if ready(page):
            return page
        if page["metrics"] and "test_acc" not in page["metrics"]:
            driver.execute_script(
                "const g = document.querySelectorAll('.ReactVirtualized__Grid');"
                "if (g.length) { g[0].scrollTop = (g[0].scrollTop + 135) % g[0].scrollHeight; }")
        time.sleep(0.5)
    raise AssertionError(f"compare page never showed {what} within {PAGE_DEADLINE_S} s:\n"
                         f"{json.dumps({k: v for k, v in page.items() if k != 'text'})[:3000]}"
                         f"\n--- page text\n{page.get('text', '')[:3000]}")


def test_compare_view_shows_both_runs(ui: str, two_runs: tuple[Path, list[dict[str, Any]]]
                                      ) -> None:
    from mlflow.tracking import MlflowClient
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    base, runs = two_runs
    client = MlflowClient(tracking_uri=f"sqlite:///{base / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("litpipe").experiment_id
    for r in runs:
        r["name"] = client.get_run(r["run_id"]).info.run_name
    ids = [r["run_id"] for r in runs]
    # The route the UI's own Compare button builds (getCompareRunPageRoute in MLflow's JS).
    url = f"{ui}/#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([exp_id])}"

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,2400",
                 f"--user-data-dir={base / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(PAGE_DEADLINE_S)
        driver.get(url)
        page = wait_for(driver, lambda p: (
            row(p["details"], "Run ID:") is not None and row(p["params"], "optimizer.lr")
            and len(p["metrics"].get("test_acc", [])) == 2),
            "both runs with optimizer.lr, test_acc")
        # The assistant side panel hides half the comparison in the screenshot.
        for button in driver.find_elements(
                "css selector", '[data-component-id="mlflow.assistant.chat_panel.close"]'):
            button.click()
        # "Show diff only" on the parameters: what differs between the runs, as users look.
        driver.find_element("css selector",
                            '[aria-label="Parameters - Show diff only"]').click()
        diff = wait_for(driver, lambda p: p["paramsDiffOnly"] == "true"
                        and "data.dataset" not in {r[0] for r in p["params"] if r},
                        "the parameters filtered to the differing ones")
        # The parallel-coordinates plot at the top loads its chart code last; give it a few
        # seconds so the screenshot shows it (the assertions below do not depend on it).
        plot_deadline = time.monotonic() + 15
        while time.monotonic() < plot_deadline and not driver.find_elements(
                "css selector", ".js-plotly-plot .main-svg"):
            time.sleep(0.5)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()

    run_ids = row(page["details"], "Run ID:")
    assert sorted(run_ids) == sorted(ids), page["details"]
    column = {run_id: i for i, run_id in enumerate(run_ids)}  # the UI orders the columns
    names = row(page["details"], "Run Name:")
    lrs = row(page["params"], "optimizer.lr")
    test_accs = page["metrics"]["test_acc"]
    for r in runs:
        i = column[r["run_id"]]
        assert names[i] == r["name"], (names, r)
        assert lrs[i] == r["lr"], (lrs, r)
        # The UI rounds metrics for display (0.947222 -> "0.947").
        assert float(test_accs[i]) == pytest.approx(r["test_acc"], abs=5e-4), (test_accs, r)
    assert len(set(test_accs)) == 2, f"the runs should differ in test_acc: {test_accs}"
    # Under "Show diff only", optimizer.lr is the one parameter left: the runs differ in it alone.
    assert [r[0] for r in diff["params"] if r] == ["optimizer.lr"], diff["params"]
    for text in (*ids, *names):  # visible text, not just the DOM
        assert text in diff["text"]
