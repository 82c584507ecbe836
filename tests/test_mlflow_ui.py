"""Runs compared in the MLflow UI, checked as a user sees them, in headless Chromium.

Two training runs differing only in `train.lr` go into one tracking DB; `mlflow server`
serves it on loopback; Selenium drives Debian's Chromium to the experiment's compare-runs
view and checks that both runs, their `train.lr` and their `test_acc` are on the page. The
screenshot is saved as reports/mlflow_compare.png. Skipped, saying why, without Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from litpipe.config import load_params
from litpipe.evaluation import evaluate_stage
from litpipe.preprocess import split_stage
from litpipe.training import train_stage
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = ROOT / "reports/mlflow_compare.png"


def _skip_reason() -> str | None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return "Chromium/chromedriver not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("ui")
    (base / "raw/digits").mkdir(parents=True)
    db = f"sqlite:///{base / 'mlflow.db'}"
    runs = []
    for lr in (0.002, 0.004):
        params = load_params(ROOT / "params.yaml", overrides={
            "data.dataset": "digits", "data.val_size": 200, "train.epochs": 2,
            "train.batch_size": 64, "train.progress_bar": False, "train.lr": lr,
            "train.val_image_samples": 0, "tracking.uri": db, "evaluate.samples": 4})
        if not runs:
            split_stage(params, base / "raw", base / "processed")
        out = base / f"lr{lr}"
        summary = train_stage(params, base / "processed", out / "models", out / "reports")
        evaluate_stage(params, base / "processed", out / "models", out / "reports")
        metrics = json.loads((out / "reports/metrics.json").read_text())
        runs.append({"run_id": summary["run_id"], "lr": lr, "test_acc": metrics["test_acc"]})
    return base, runs


@pytest.fixture(scope="module")
def ui(two_runs: tuple[Path, list[dict]]) -> Iterator[str]:
    base, _ = two_runs
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{base / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not answer /health within 90 s")
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_compare_view_shows_both_runs(ui: str, two_runs: tuple[Path, list[dict]]) -> None:
    from mlflow.tracking import MlflowClient
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    base, runs = two_runs
    client = MlflowClient(tracking_uri=f"sqlite:///{base / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("litpipe").experiment_id
    names = [client.get_run(r["run_id"]).info.run_name for r in runs]
    ids = json.dumps([r["run_id"] for r in runs]).replace(" ", "")
    url = f"{ui}/#/compare-runs?runs={ids}&experiments={json.dumps([exp_id])}"

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={base / 'chrome-profile'}", "--window-size=1400,2600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        wanted = [*names, "train.lr", "0.002", "0.004", "test_acc"]
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            text = driver.find_element("tag name", "body").text
            if all(w in text for w in wanted):
                break
            time.sleep(0.5)
        # "Show diff only" on the parameters table: the screenshot then leads with train.lr.
        switches = driver.find_elements("css selector", "[role=switch]")
        if switches:
            switches[0].click()
            time.sleep(1.0)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
    missing = [w for w in wanted if w not in text]
    assert not missing, f"not on the compare page: {missing}\n{text[:2000]}"
    for r in runs:  # the UI shows metrics rounded; match the value to 3 decimals
        assert f"{r['test_acc']:.3f}".rstrip("0") in text or str(r["test_acc"]) in text
