"""The registered model, served by `mlflow models serve`, answers in the user's terms.

One real model is trained on digits and put through the real export stage into a SQLite
MLflow store (tests/helpers/registry.py). The server is MLflow's own command, started the
way the README says (``--env-manager local``: this machine is offline), on a free port of
127.0.0.1, and stopped by the test; the request is a real HTTP ``POST /invocations``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from litpipe.predict import predict
from tests.helpers.registry import MODEL_NAME, build_registered, sqlite_uri
from tests.helpers.repo import pipeline_env

N_IMAGES = 5
CLASSES = [str(i) for i in range(10)]
SERVER_START_S = 180  # MLflow imports and the model load take ~15 s here; CI can be slower


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(directory with the store, export and digit PNGs; the registered version)."""
    from litpipe.data.processed import load_split

    base = tmp_path_factory.mktemp("serving")
    _, _, version = build_registered(base)
    x, _ = load_split(base / "processed", "test")
    for i, img in enumerate(np.array(x[:N_IMAGES])):
        Image.fromarray(img[0]).save(base / f"digit{i}.png")
    return base, version


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server(registered: tuple[Path, str]) -> Iterator[str]:
    """`mlflow models serve -m models:/litpipe-classifier/<N>` on a free loopback port; its
    URL. Started in its own process group, which is what is stopped afterwards (MLflow's
    command runs uvicorn as a child process)."""
    base, version = registered
    port = free_port()
    log = (base / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve",
         "-m", f"models:/{MODEL_NAME}/{version}", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=base, env={**pipeline_env(), "MLFLOW_TRACKING_URI": sqlite_uri(base)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow models serve exited {proc.returncode}:\n"
                                     + (base / "serve.log").read_text()[-4000:])
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not up after {SERVER_START_S} s:\n"
                                     + (base / "serve.log").read_text()[-4000:])
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        log.close()


def test_served_model_answers_with_class_names_like_litpipe_predict(
        registered: tuple[Path, str], server: str) -> None:
    base, _ = registered
    files = [base / f"digit{i}.png" for i in range(N_IMAGES)]
    local = predict(files, onnx=base / "models/export/model.onnx")
    # The request as the model's contract says: N×1×8×8 float32, the uint8 value / 255.
    pixels = np.stack([np.asarray(Image.open(f))[None] for f in files])
    status, body = post(f"{server}/invocations",
                        {"inputs": (pixels.astype(np.float32) / 255).tolist()})
    assert status == 200, body
    served = body["predictions"]
    assert len(served) == N_IMAGES
    for answer in served:
        assert answer["class"] in CLASSES
        assert list(answer["probabilities"]) == CLASSES
        assert answer["probability"] == max(answer["probabilities"].values())
        assert answer["class"] == CLASSES[answer["class_index"]]
    # Same answers as `litpipe predict` on the same images (which adds the file name).
    assert served == [{k: v for k, v in r.items() if k != "file"} for r in local]


def test_served_model_refuses_pixels_outside_the_unit_range(registered: tuple[Path, str],
                                                            server: str) -> None:
    """A client sending 0..255 gets HTTP 400 saying what the model expects, not nonsense."""
    status, body = post(f"{server}/invocations", {"inputs": np.full((1, 1, 8, 8), 255.0)
                                                  .tolist()})
    assert status == 400, body
    assert "pixels must be in [0, 1] (the uint8 value / 255)" in body["message"]
    status, body = post(f"{server}/invocations", {"inputs": np.zeros((1, 3, 8, 8)).tolist()})
    assert status == 400, body  # MLflow's own check against the tensor signature


def test_logged_model_states_its_input_contract_and_holds_no_pickle(
        registered: tuple[Path, str], tmp_path: Path) -> None:
    """Signature (tensor), MLmodel metadata and model.json all say N×C×H×W float32 in [0, 1];
    the model is code plus the ONNX file: no pickle to load from the store."""
    from litpipe.tracking import models

    base, version = registered
    uri = sqlite_uri(base)
    model_dir = models.download(models.resolve(f"models:/{MODEL_NAME}/{version}", uri),
                                  uri, tmp_path)
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    [spec] = json.loads(mlmodel["signature"]["inputs"])
    assert spec == {"type": "tensor", "tensor-spec": {"dtype": "float32",
                                                      "shape": [-1, 1, 8, 8]}}
    outputs = {o["name"] for o in json.loads(mlmodel["signature"]["outputs"])}
    assert outputs == {"class", "class_index", "probability", "probabilities"}
    contract = mlmodel["metadata"]["litpipe"]
    assert contract == json.loads((base / "models/export/model.json").read_text())
    assert contract["input"] == {"name": "images", "dtype": "float32",
                                 "shape": ["batch", 1, 8, 8], "layout": "NCHW",
                                 "range": [0.0, 1.0], "scale": "uint8 / 255",
                                 "channels": "grey"}
    assert contract["output"]["classes"] == CLASSES
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # models from code
    assert (model_dir / "code/litpipe/tracking/pyfunc.py").is_file()
    assert (model_dir / "artifacts/model.onnx").read_bytes() == \
        (base / "models/export/model.onnx").read_bytes()
    assert not [p for p in model_dir.rglob("*") if p.suffix in (".pkl", ".pickle")]
