"""The downloader against a real HTTP server on loopback, with the failures networks produce.

The server (started per test module, bound to 127.0.0.1, stopped at teardown) serves small
files in the real formats — gzipped IDX for the MNIST family, CIFAR-10's python tarball —
made here, under per-path behaviours: ok, 404, truncated, corrupted, stalled, trickled.
Every failure case checks the message and that data/raw holds nothing partial.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from litpipe.config import DataConfig
from litpipe.datasets import FASHION_MNIST, MNIST, load_idx_dataset
from litpipe.download import DownloadError, download_dataset

FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def mnist_like(n: int = 12, seed: int = 0) -> dict[str, bytes]:
    """Gzipped IDX files named as on the real mirrors."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, count in (("train", n), ("t10k", n // 2)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(
            idx_bytes(rng.integers(0, 256, (count, 28, 28))), mtime=0)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(
            idx_bytes(rng.integers(0, 10, count)), mtime=0)
    return files


def sha256_digests(files: dict[str, bytes]) -> dict[str, str]:
    return {k: "sha256:" + hashlib.sha256(gzip.decompress(v)).hexdigest()
            for k, v in files.items()}


def md5_digests(files: dict[str, bytes]) -> dict[str, str]:
    return {k: "md5:" + hashlib.md5(v).hexdigest() for k, v in files.items()}


def cifar_tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cifar_members(n: int = 4) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        out[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch, protocol=2)
    out["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [b"airplane"] * 10}, protocol=2)
    return out


class Routes:
    """path -> (behaviour, payload); shared with the handler threads."""

    def __init__(self) -> None:
        self.table: dict[str, tuple[str, bytes]] = {}
        self.hits: list[str] = []

    def set(self, prefix: str, files: dict[str, bytes], behaviour: str = "ok") -> None:
        for name, data in files.items():
            self.table[f"/{prefix}/{name}"] = (behaviour, data)


def make_handler(routes: Routes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            routes.hits.append(self.path)
            behaviour, data = routes.table.get(self.path, ("404", b""))
            if behaviour == "404":
                self.send_error(404)
                return
            if behaviour == "stall":
                time.sleep(2.0)  # longer than the client's timeout; bounded
            if behaviour == "corrupt":
                data = data[:-8] + bytes(8)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                if behaviour == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif behaviour == "trickle":
                    for i in range(0, len(data), 256):
                        self.wfile.write(data[i: i + 256])
                        self.wfile.flush()
                        time.sleep(0.05)
                else:
                    self.wfile.write(data)
            except OSError:
                pass

    return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Routes]]:
    routes = Routes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(routes))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cfg(dataset: str, mirrors: list[str], digests: dict[str, str], **kw: object) -> DataConfig:
    return DataConfig(dataset=dataset, mirrors={dataset: mirrors}, digests=digests,
                      **{"timeout": 0.5, "retries": 1, **kw})


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------ happy

def test_second_mirror_after_404(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like()
    routes.set("good", files)
    c = cfg("fashion_mnist", [f"{url}/missing/", f"{url}/good"], sha256_digests(files))
    dest = download_dataset(c, tmp_path / "raw", progress=False)
    data = load_idx_dataset(dest)
    assert data["train"][0].shape == (12, 1, 28, 28) and data["test"][1].shape == (6,)
    assert files_under(tmp_path / "raw") == sorted(
        ["fashion_mnist/MANIFEST.json"] + [f"fashion_mnist/{f.local}"
                                           for f in FASHION_MNIST.files])
    # A rerun verifies what is there and fetches nothing.
    before = len(routes.hits)
    download_dataset(c, tmp_path / "raw", progress=False)
    assert len(routes.hits) == before


def test_mnist_by_archive_md5(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like(seed=3)
    routes.set("mnist", files)
    dest = download_dataset(cfg("mnist", [f"{url}/mnist/"], md5_digests(files)),
                            tmp_path / "raw", progress=False)
    assert {f.local for f in MNIST.files} <= {p.name for p in dest.iterdir()}


def test_cifar_tarball_end_to_end(server, tmp_path: Path) -> None:
    from litpipe.cifar import load_cifar10

    url, routes = server
    tar = {"cifar-10-python.tar.gz": cifar_tarball(cifar_members())}
    routes.set("cifar", tar)
    dest = download_dataset(cfg("cifar10", [f"{url}/cifar/"], md5_digests(tar)),
                            tmp_path / "raw", progress=False)
    data = load_cifar10(dest)
    assert data["train"][0].shape == (20, 3, 32, 32) and data["test"][0].shape == (4, 3, 32, 32)
    assert not (tmp_path / "raw/.partial").exists()


def test_digits_needs_no_network(tmp_path: Path) -> None:
    dest = download_dataset(DataConfig(dataset="digits"), tmp_path / "raw", progress=False)
    assert "scikit-learn" in (dest / "MANIFEST.json").read_text()


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian dataset-fashion-mnist not installed")
@pytest.mark.parametrize("style", ["file_url", "directory"])
def test_local_mirrors_with_real_digests(tmp_path: Path, style: str) -> None:
    mirror = FASHION.as_uri() + "/" if style == "file_url" else str(FASHION)
    dest = download_dataset(cfg("fashion_mnist", [mirror], {}), tmp_path / "raw",
                            progress=False)
    assert load_idx_dataset(dest)["train"][0].shape == (60000, 1, 28, 28)


# ---------------------------------------------------------------------------- failures

def assert_nothing_partial(raw: Path) -> None:
    assert files_under(raw) == [], files_under(raw)


def test_truncated_body(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like()
    routes.set("trunc", files, "truncate")
    with pytest.raises(DownloadError) as err:
        download_dataset(cfg("fashion_mnist", [f"{url}/trunc/"], sha256_digests(files)),
                         tmp_path / "raw", progress=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and f"{url}/trunc/" in msg
    assert "truncated: got" in msg and "attempt 2/2" in msg  # retried, then gave up
    assert_nothing_partial(tmp_path / "raw")


def test_corrupted_body_names_digests(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like()
    routes.set("corrupt", files, "corrupt")
    digests = md5_digests(files)
    with pytest.raises(DownloadError) as err:
        download_dataset(cfg("mnist", [f"{url}/corrupt/"], digests), tmp_path / "raw",
                         progress=False)
    msg = str(err.value)
    assert "digest mismatch for train-images-idx3-ubyte.gz" in msg
    assert f"expected {digests['train-images-idx3-ubyte.gz']}" in msg and "got md5:" in msg
    assert f"{url}/corrupt/train-images-idx3-ubyte.gz" in msg
    assert "attempt" not in msg  # a wrong digest is not retried on the same mirror
    assert_nothing_partial(tmp_path / "raw")


def test_stalled_server_times_out_then_next_mirror(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like(seed=5)
    routes.set("stall", files, "stall")
    routes.set("ok5", files)
    t0 = time.monotonic()
    download_dataset(cfg("fashion_mnist", [f"{url}/stall/", f"{url}/ok5/"],
                         sha256_digests(files), retries=0), tmp_path / "raw", progress=False)
    assert time.monotonic() - t0 < 30
    assert "/stall/train-images-idx3-ubyte.gz" in routes.hits


def test_stall_only_reports_timeout(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like(seed=6)
    routes.set("stall6", files, "stall")
    with pytest.raises(DownloadError, match="timed out"):
        download_dataset(cfg("fashion_mnist", [f"{url}/stall6/"], sha256_digests(files),
                             retries=0), tmp_path / "raw", progress=False)
    assert_nothing_partial(tmp_path / "raw")


def test_connection_refused(tmp_path: Path) -> None:
    port = closed_port()
    with pytest.raises(DownloadError) as err:
        download_dataset(cfg("fashion_mnist", [f"http://127.0.0.1:{port}/"],
                             sha256_digests(mnist_like())), tmp_path / "raw", progress=False)
    msg = str(err.value)
    assert "connection refused" in msg and f"127.0.0.1:{port}" in msg
    assert "Nothing partial was left" in msg
    assert_nothing_partial(tmp_path / "raw")


def test_tarball_escaping_member_is_refused(server, tmp_path: Path) -> None:
    url, routes = server
    members = cifar_members()
    members["../../evil.txt"] = b"owned"
    tar = {"cifar-10-python.tar.gz": cifar_tarball(members)}
    routes.set("eviltar", tar)
    with pytest.raises(DownloadError, match=r"refusing archive member '\.\./\.\./evil\.txt'"):
        download_dataset(cfg("cifar10", [f"{url}/eviltar/"], md5_digests(tar)),
                         tmp_path / "raw", progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert_nothing_partial(tmp_path / "raw")


def test_bad_digest_override_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="use 'sha256:<hex>'"):
        download_dataset(cfg("mnist", ["http://127.0.0.1:9/"],
                             {"train-images-idx3-ubyte.gz": "crc32:00"}), tmp_path / "raw",
                         progress=False)


KILL_SCRIPT = """
import sys
from pathlib import Path
from litpipe.config import DataConfig
from litpipe.download import download_dataset
import json
c = DataConfig.model_validate(json.loads(sys.argv[1]))
download_dataset(c, Path(sys.argv[2]), progress=False)
"""


def test_killed_download_then_rerun(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like(n=400, seed=7)  # ~300 kB trickled at 5 kB/s: killed mid-stream
    routes.set("slow", files, "trickle")
    routes.set("fast", files)
    raw = tmp_path / "raw"
    slow = cfg("fashion_mnist", [f"{url}/slow/"], sha256_digests(files), timeout=5)
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, slow.model_dump_json(),
                             str(raw)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not list((raw / ".partial").glob("*.download")):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    leftovers = files_under(raw)
    assert leftovers and all(p.startswith(".partial/") for p in leftovers), leftovers
    assert not (raw / "fashion_mnist/MANIFEST.json").exists()

    fast = cfg("fashion_mnist", [f"{url}/fast/"], sha256_digests(files))
    dest = download_dataset(fast, raw, progress=False)
    assert load_idx_dataset(dest)["train"][0].shape == (400, 1, 28, 28)
    assert not (raw / ".partial").exists()


def test_download_does_not_import_torch() -> None:
    probe = subprocess.run([sys.executable, "-c",
                            "import sys, litpipe.download, litpipe.stage_runner, "
                            "litpipe.stages_impl; print('torch' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False", probe.stderr


def test_stage_failure_is_one_paragraph_without_traceback(tmp_path: Path) -> None:
    """What a user sees from `dvc repro` when every mirror fails."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["dataset"] = "mnist"
    params["data"]["mirrors"]["mnist"] = [f"http://127.0.0.1:{closed_port()}/"]
    params["data"]["retries"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, str(root / "stages/download.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("litpipe download: error: could not fetch train-images-idx3-ubyte")
    assert "connection refused" in last and "Traceback" not in proc.stderr
    assert files_under(tmp_path / "data/raw") == []
