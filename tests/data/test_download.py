"""The downloader against a real HTTP server on loopback, with the failures networks produce.

The server (one per module, bound to 127.0.0.1 on an ephemeral port, stopped at teardown)
serves small files in the real formats — gzipped IDX for the MNIST family, CIFAR-10's
python tarball — with per-path behaviours (see ``tests/helpers/http.py``). Every failure
case checks the message and that the dataset directory holds nothing partial.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from litpipe.data.datasets import FASHION_MNIST, MNIST
from litpipe.data.download import PARTIAL, DownloadError, download_dataset
from litpipe.data.readers import load_idx_dataset
from litpipe.params import load_params
from litpipe.schema import DataConfig
from tests.helpers.datasets import (
    cifar_members,
    cifar_tarball,
    files_under,
    md5_digests,
    mnist_like,
    sha256_digests,
)
from tests.helpers.http import AUTH_PASSWORD, AUTH_USER, STALL_S, closed_port
from tests.helpers.repo import ROOT

FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_LOCALS = sorted(f.local for f in FASHION_MNIST.files)
FIRST = "train-images-idx3-ubyte.gz"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's http_proxy must not route loopback requests through a proxy."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def cfg(dataset: str, mirrors: list[str], digests: dict[str, str], **kw: object) -> DataConfig:
    """The repo's data section with these mirrors, digests and quick timeouts."""
    base = load_params(ROOT / "params.yaml").data.model_dump()
    return DataConfig(**{**base, "dataset": dataset, "mirrors": {dataset: mirrors},
                         "digests": digests, "timeout": 0.5, "retries": 1, **kw})


def sources(stderr: str) -> dict[str, str]:
    """Remote file name -> the URL it was fetched from, as the download stage logs it (the
    manifest does not record it, so that data/raw is the same whichever mirror served)."""
    found = re.findall(r"^download: (\S+) verified \(.*\) from (\S+)$", stderr, re.M)
    return dict(found)


def fetch_error(c: DataConfig, raw: Path) -> str:
    with pytest.raises(DownloadError) as err:
        download_dataset(c, raw, progress=False)
    return str(err.value)


def assert_nothing_left(raw: Path) -> None:
    """After a failure on the first file: no file at all, not even in .partial."""
    assert files_under(raw) == [], files_under(raw)


def manifest(dest: Path) -> dict:
    return json.loads((dest / "MANIFEST.json").read_text())


# ------------------------------------------------------------------------------ happy

def test_second_mirror_after_404_and_cheap_rerun(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like()
    routes.set("good", files)
    raw = tmp_path / "raw"
    # No trailing slash on the second mirror: both spellings must work.
    c = cfg("fashion_mnist", [f"{url}/missing/", f"{url}/good"], sha256_digests(files),
            retries=2)
    dest = download_dataset(c, raw, progress=False)
    assert dest == raw / "fashion_mnist"
    data = load_idx_dataset(dest)
    assert data["train"][0].shape == (12, 1, 28, 28) and data["test"][1].shape == (6,)
    assert files_under(raw) == sorted(["fashion_mnist/MANIFEST.json"]
                                      + [f"fashion_mnist/{n}" for n in IDX_LOCALS])
    assert routes.count(f"/missing/{FIRST}") == 1  # a 404 is not retried

    text = (dest / "MANIFEST.json").read_text()
    m = json.loads(text)
    assert text == json.dumps(m, indent=2, sort_keys=True) + "\n"
    entry = m["files"][FIRST]
    content = gzip.decompress(files[FIRST])
    assert entry == {"local": "train-images-idx3-ubyte", "algorithm": "sha256",
                     "digest": hashlib.sha256(content).hexdigest(),
                     "local_sha256": hashlib.sha256(content).hexdigest(),
                     "size": len(content)}
    assert routes.count(f"/good/{FIRST}") == 1

    # A rerun re-hashes what is there and fetches nothing.
    before = len(routes.hits)
    download_dataset(c, raw, progress=False)
    assert len(routes.hits) == before
    assert (dest / "MANIFEST.json").read_text() == text
    # Same data from the same mirror into another root: byte-identical manifest.
    assert (download_dataset(c, tmp_path / "raw2", progress=False)
            / "MANIFEST.json").read_text() == text
    # ... and from another mirror: the mirrors are not params of the download stage, so
    # its output must not depend on which one answered.
    routes.set("elsewhere", files)
    other = cfg("fashion_mnist", [f"{url}/elsewhere/"], sha256_digests(files))
    assert (download_dataset(other, tmp_path / "raw3", progress=False)
            / "MANIFEST.json").read_text() == text
    assert routes.count(f"/elsewhere/{FIRST}") == 1


def test_mnist_by_md5_override_rerun_and_tampering(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like(seed=3)
    routes.set("mnist", files)
    raw = tmp_path / "raw"
    c = cfg("mnist", [f"{url}/mnist/"], md5_digests(files))
    dest = download_dataset(c, raw, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["MANIFEST.json"] + [f.local for f in MNIST.files])
    assert manifest(dest)["files"][FIRST]["digest"] == md5_digests(files)[FIRST][4:]
    assert (dest / "train-images-idx3-ubyte").read_bytes() == gzip.decompress(files[FIRST])

    # The archives are gone, so a rerun re-verifies against the manifest's content hashes.
    hits = len(routes.hits)
    download_dataset(c, raw, progress=False)
    assert len(routes.hits) == hits

    # A damaged local file is noticed and fetched again; the others are kept.
    labels = dest / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + b"\x09")
    download_dataset(c, raw, progress=False)
    assert routes.hits[hits:] == ["/mnist/t10k-labels-idx1-ubyte.gz"]
    assert labels.read_bytes() == gzip.decompress(files["t10k-labels-idx1-ubyte.gz"])


def test_changed_digests_fetch_the_new_files(server, tmp_path: Path, capsys) -> None:
    url, routes = server
    old, new = mnist_like(seed=10), mnist_like(n=8, seed=11)
    routes.set("v1", old)
    routes.set("v2", new)
    raw = tmp_path / "raw"
    download_dataset(cfg("mnist", [f"{url}/v1/"], md5_digests(old)), raw, progress=False)
    dest = download_dataset(cfg("mnist", [f"{url}/v2/"], md5_digests(new)), raw,
                            progress=False)
    assert load_idx_dataset(dest)["train"][0].shape == (8, 1, 28, 28)
    assert all(routes.count(f"/v2/{name}") == 1 for name in new)


def test_wrong_file_on_first_mirror_then_right_one(server, tmp_path: Path) -> None:
    url, routes = server
    files, other = mnist_like(seed=20), mnist_like(seed=21)
    routes.set("other", other)
    routes.set("right", files)
    dest = download_dataset(cfg("fashion_mnist", [f"{url}/other/", f"{url}/right/"],
                                sha256_digests(files), retries=2), tmp_path / "raw",
                            progress=False)
    assert routes.count(f"/other/{FIRST}") == 1  # a digest mismatch is not retried
    assert routes.count(f"/right/{FIRST}") == 1
    assert load_idx_dataset(dest)["train"][0].tobytes() == gzip.decompress(
        files[FIRST])[16:]


def test_503_is_retried_with_backoff(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like(seed=30)
    routes.set("flaky", files, "flaky")
    t0 = time.monotonic()
    download_dataset(cfg("mnist", [f"{url}/flaky/"], md5_digests(files), retries=1),
                     tmp_path / "raw", progress=False)
    assert time.monotonic() - t0 >= 0.5  # one backoff pause per file's first 503 ...
    assert all(routes.count(f"/flaky/{name}") == 2 for name in files)  # ... then success

    routes.set("flaky0", files, "flaky")
    msg = fetch_error(cfg("mnist", [f"{url}/flaky0/"], md5_digests(files), retries=0),
                      tmp_path / "raw0")
    assert f"{url}/flaky0/{FIRST} (attempt 1/1): HTTP 503 Service Unavailable" in msg
    assert_nothing_left(tmp_path / "raw0")


def test_private_mirror_with_basic_auth(server, tmp_path: Path, capsys) -> None:
    url, routes = server
    files = mnist_like(seed=60)
    routes.set("private", files, "auth")
    host = url.removeprefix("http://")
    dest = download_dataset(cfg("mnist", [f"http://{AUTH_USER}:{AUTH_PASSWORD}@{host}/private/"],
                                md5_digests(files)), tmp_path / "raw", progress=False)
    err = capsys.readouterr().err
    assert sources(err)[FIRST] == f"{url}/private/{FIRST}"  # logged without the password
    assert AUTH_PASSWORD not in err + (dest / "MANIFEST.json").read_text()

    msg = fetch_error(cfg("mnist", [f"{url}/private/"], md5_digests(files), retries=2),
                      tmp_path / "raw2")
    assert f"{url}/private/{FIRST}: HTTP 401 Unauthorized" in msg  # final: not retried
    assert_nothing_left(tmp_path / "raw2")


def test_cifar_tarball_end_to_end(server, tmp_path: Path) -> None:
    from litpipe.data.cifar import load_cifar10

    url, routes = server
    members = cifar_members(n=4)
    tar = {"cifar-10-python.tar.gz": cifar_tarball(members)}
    routes.set("cifar", tar)
    raw = tmp_path / "raw"
    c = cfg("cifar10", [f"{url}/cifar/"], md5_digests(tar))
    dest = download_dataset(c, raw, progress=False)
    assert dest == raw / "cifar10"
    data = load_cifar10(dest)
    x, y = data["train"]
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    assert data["test"][0].shape == (4, 3, 32, 32) and data["test"][1].shape == (4,)
    batch = pickle.loads(members["cifar-10-batches-py/test_batch"], encoding="bytes")
    assert np.array_equal(data["test"][0].reshape(4, -1), batch[b"data"])
    assert data["test"][1].tolist() == batch[b"labels"]
    assert (dest / "cifar-10-batches-py/batches.meta").is_file()
    assert not (raw / PARTIAL).exists()
    assert not (dest / "cifar-10-python.tar.gz").exists()

    # Rerun: the extracted tree is re-hashed against the manifest, nothing is fetched;
    # a missing batch makes the tree differ, so the tarball is fetched and swapped in.
    hits = len(routes.hits)
    download_dataset(c, raw, progress=False)
    assert len(routes.hits) == hits
    (dest / "cifar-10-batches-py/data_batch_3").unlink()
    download_dataset(c, raw, progress=False)
    assert len(routes.hits) == hits + 1
    assert load_cifar10(dest)["train"][0].shape == (20, 3, 32, 32)


def test_cifar_tarball_pinned_by_content_sha256(server, tmp_path: Path) -> None:
    """A tarball pinned by ``sha256:`` of its (gunzipped) content: a mirror serving other
    content is refused before anything is extracted, and the next mirror's right one is
    installed. Without the check, the wrong batches would be extracted and trained on."""
    from litpipe.data.cifar import load_cifar10

    url, routes = server
    right = {"cifar-10-python.tar.gz": cifar_tarball(cifar_members(n=3, seed=70))}
    wrong = {"cifar-10-python.tar.gz": cifar_tarball(cifar_members(n=3, seed=71))}
    routes.set("cifar-wrong", wrong)
    routes.set("cifar-right", right)
    pinned = sha256_digests(right)  # sha256 of the decompressed tar stream
    name = "cifar-10-python.tar.gz"
    got = hashlib.sha256(gzip.decompress(wrong[name])).hexdigest()

    msg = fetch_error(cfg("cifar10", [f"{url}/cifar-wrong/"], pinned), tmp_path / "raw")
    assert (f"digest mismatch for {name} from {url}/cifar-wrong/{name}: expected "
            f"{pinned[name]}, got sha256:{got}") in msg
    assert_nothing_left(tmp_path / "raw")

    dest = download_dataset(cfg("cifar10", [f"{url}/cifar-wrong/", f"{url}/cifar-right/"],
                                pinned), tmp_path / "raw2", progress=False)
    entry = manifest(dest)["files"][name]
    assert (entry["algorithm"], "sha256:" + entry["digest"]) == ("sha256", pinned[name])
    assert routes.count(f"/cifar-right/{name}") == 1
    batch = pickle.loads(cifar_members(n=3, seed=70)["cifar-10-batches-py/test_batch"],
                         encoding="bytes")
    assert np.array_equal(load_cifar10(dest)["test"][0].reshape(3, -1), batch[b"data"])


def test_tampered_cifar_pickle_is_refused_at_load(server, tmp_path: Path) -> None:
    """A tarball whose digest is trusted can still hold a hostile pickle: the reader refuses."""
    from litpipe.data.cifar import UnsafePickleError, load_cifar10

    url, routes = server
    evil = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0],
                         b"x": os.system}, protocol=2)  # a reference to a callable
    members = {**cifar_members(n=2), "cifar-10-batches-py/test_batch": evil}
    tar = {"cifar-10-python.tar.gz": cifar_tarball(members)}
    routes.set("cifar-evil", tar)
    dest = download_dataset(cfg("cifar10", [f"{url}/cifar-evil/"], md5_digests(tar)),
                            tmp_path / "raw", progress=False)
    with pytest.raises(UnsafePickleError, match=r"test_batch: refusing to load posix\.system"):
        load_cifar10(dest)


def test_digits_needs_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import urllib.request

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("digits must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    dest = download_dataset(cfg("digits", [], {}), tmp_path / "raw",
                            progress=False)
    assert files_under(tmp_path / "raw") == ["digits/MANIFEST.json"]
    m = manifest(dest)
    assert m["sklearn_version"] == metadata.version("scikit-learn")
    assert "bundled with scikit-learn" in m["source"] and m["files"] == {}


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_local_mirrors_with_real_digests(server, tmp_path: Path, capsys) -> None:
    """The real Fashion-MNIST set via a file:// URL, checked against the registry SHA-256s;
    then a plain directory path mirror, after an HTTP mirror that 404s."""
    url, _ = server
    dest = download_dataset(cfg("fashion_mnist", [FASHION.as_uri() + "/"], {}),
                            tmp_path / "raw", progress=False)
    data = load_idx_dataset(dest)
    assert data["train"][0].shape == (60000, 1, 28, 28) and data["test"][0].shape == (
        10000, 1, 28, 28)
    for f in FASHION_MNIST.files:
        assert manifest(dest)["files"][f.remote]["local_sha256"] == f.sha256

    # A directory path mirror; copying the verified files in by hand first makes the
    # downloader keep them (re-hashed against the registry) without a manifest.
    raw2 = tmp_path / "raw2"
    (raw2 / "fashion_mnist").mkdir(parents=True)
    keep = FASHION_MNIST.files[0]
    os.link(dest / keep.local, raw2 / "fashion_mnist" / keep.local)
    capsys.readouterr()  # only the second download's log below
    dest2 = download_dataset(cfg("fashion_mnist", [f"{url}/nothing-here/", str(FASHION)], {},
                                 retries=0), raw2, progress=False)
    assert manifest(dest2) == manifest(dest)  # the same data, however it got there
    got = sources(capsys.readouterr().err)
    assert keep.remote not in got  # found verified in place: nothing fetched
    assert {got[f.remote] for f in FASHION_MNIST.files if f is not keep} == {
        (FASHION / f.remote).as_uri() for f in FASHION_MNIST.files if f is not keep}
    assert files_under(raw2) == sorted(["fashion_mnist/MANIFEST.json"]
                                       + [f"fashion_mnist/{n}" for n in IDX_LOCALS])


# ---------------------------------------------------------------------------- failures

def test_truncated_body(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like()
    routes.set("trunc", files, "truncate")
    n = len(files[FIRST])
    msg = fetch_error(cfg("fashion_mnist", [f"{url}/trunc/"], sha256_digests(files)),
                      tmp_path / "raw")
    assert f"could not fetch {FIRST} for dataset 'fashion_mnist'" in msg
    for attempt in (1, 2):  # retried once, then gave up
        assert (f"{url}/trunc/{FIRST} (attempt {attempt}/2): truncated: got {n // 2} of {n} "
                "bytes (Content-Length)") in msg
    assert routes.count(f"/trunc/{FIRST}") == 2
    assert_nothing_left(tmp_path / "raw")


def test_corrupted_body_names_file_mirror_and_digests(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like(seed=40)
    routes.set("corrupt", files, "corrupt")
    digests = md5_digests(files)
    data = files[FIRST]
    mid = len(data) // 2
    served = data[:mid] + bytes(b ^ 0xFF for b in data[mid: mid + 16]) + data[mid + 16:]
    msg = fetch_error(cfg("mnist", [f"{url}/corrupt/"], digests, retries=2), tmp_path / "raw")
    assert (f"digest mismatch for {FIRST} from {url}/corrupt/{FIRST}: expected "
            f"{digests[FIRST]}, got md5:{hashlib.md5(served).hexdigest()}") in msg
    assert "attempt" not in msg and routes.count(f"/corrupt/{FIRST}") == 1  # not retried
    assert_nothing_left(tmp_path / "raw")


def test_stalled_server_times_out_then_next_mirror(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like(seed=5)
    routes.set("stall", {FIRST: files[FIRST]}, "stall")  # the other files 404 there
    routes.set("ok5", files)
    t0 = time.monotonic()
    dest = download_dataset(cfg("fashion_mnist", [f"{url}/stall/", f"{url}/ok5/"],
                                sha256_digests(files), retries=0), tmp_path / "raw",
                            progress=False)
    assert time.monotonic() - t0 < STALL_S - 0.5  # gave up after data.timeout, not the stall
    assert routes.count(f"/stall/{FIRST}") == 1
    assert routes.count(f"/ok5/{FIRST}") == 1 and (dest / "MANIFEST.json").exists()


def test_connection_refused_retries_with_backoff(tmp_path: Path) -> None:
    port = closed_port()
    t0 = time.monotonic()
    msg = fetch_error(cfg("fashion_mnist", [f"http://user:s3cret@127.0.0.1:{port}/"],
                          sha256_digests(mnist_like()), retries=2), tmp_path / "raw")
    elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 5  # backoff 0.5 s then 1 s between the three attempts
    for attempt in (1, 2, 3):
        assert f"http://127.0.0.1:{port}/{FIRST} (attempt {attempt}/3): connection refused" in msg
    assert "s3cret" not in msg  # credentials in a mirror URL are not echoed
    assert "Nothing partial was left" in msg
    assert_nothing_left(tmp_path / "raw")


def test_every_mirror_is_named_with_its_reason(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like(seed=50)
    routes.set("stall50", files, "stall")
    routes.set("gz50", {k: b"\x1f\x8b" + b"garbage" * 50 for k in files})
    port = closed_port()
    mirrors = [f"{url}/nope/", f"http://127.0.0.1:{port}/", f"{url}/stall50/", f"{url}/gz50/",
               (tmp_path / "no-dir").as_uri(), str(tmp_path / "no-dir-either")]
    msg = fetch_error(cfg("fashion_mnist", mirrors, sha256_digests(files), retries=0),
                      tmp_path / "raw")
    assert "from any of its 6 mirror(s)" in msg
    assert f"{url}/nope/{FIRST}: HTTP 404 Not Found" in msg
    assert f"127.0.0.1:{port}/{FIRST} (attempt 1/1): connection refused" in msg
    assert f"{url}/stall50/{FIRST} (attempt 1/1): timed out (no data for 0.5 s" in msg
    assert f"{url}/gz50/{FIRST}: not a valid gzip archive" in msg
    assert f"no-dir/{FIRST}: no such file {tmp_path / 'no-dir' / FIRST}" in msg
    assert f"no such file {tmp_path / 'no-dir-either' / FIRST}" in msg
    assert "\n" not in msg  # one paragraph
    assert_nothing_left(tmp_path / "raw")


def escaping_tarballs() -> dict[str, tuple[bytes, str, str]]:
    """Archives that try to write outside the directory: (tarball, member named, why)."""
    ok = cifar_members(n=2)
    outside = "outside the target directory"
    return {
        "dotdot": (cifar_tarball({**ok, "cifar-10-batches-py/../../evil.txt": b"owned"}),
                   "cifar-10-batches-py/../../evil.txt", f"it would be written {outside}"),
        "absolute": (cifar_tarball({**ok, "/tmp/litpipe-evil.txt": b"owned"}),
                     "/tmp/litpipe-evil.txt", f"it would be written {outside}"),
        "symlink": (cifar_tarball(ok, links={"cifar-10-batches-py/up": (tarfile.SYMTYPE,
                                                                        "../../..")}),
                    "cifar-10-batches-py/up", f"it is a symlink to '../../..', {outside}"),
        "hardlink": (cifar_tarball(ok, links={"cifar-10-batches-py/pw": (tarfile.LNKTYPE,
                                                                         "/etc/passwd")}),
                     "cifar-10-batches-py/pw", f"it is a hard link to '/etc/passwd', {outside}"),
        # The link itself stays inside; writing through it is what is refused.
        "through-symlink": (cifar_tarball({**ok, "cifar-10-batches-py/here/x": b"x"},
                                          links={"cifar-10-batches-py/here": (
                                              tarfile.SYMTYPE, ".")}),
                            "cifar-10-batches-py/here/x",
                            "its path goes through the symlink 'cifar-10-batches-py/here'"),
    }


@pytest.mark.parametrize("case", sorted(escaping_tarballs()))
def test_tarball_escaping_member_is_refused(server, tmp_path: Path, case: str) -> None:
    url, routes = server
    data, member, why = escaping_tarballs()[case]
    tar = {"cifar-10-python.tar.gz": data}
    routes.set(f"evil-{case}", tar)
    raw = tmp_path / "work" / "raw"
    msg = fetch_error(cfg("cifar10", [f"{url}/evil-{case}/"], md5_digests(tar)), raw)
    assert (f"cifar-10-python.tar.gz (from {url}/evil-{case}/cifar-10-python.tar.gz): "
            f"refusing archive member {member!r}: {why}") in msg
    assert not Path("/tmp/litpipe-evil.txt").exists()
    assert list(tmp_path.rglob("evil.txt")) == []
    assert_nothing_left(raw)


def test_bad_digest_override_is_explained(tmp_path: Path) -> None:
    msg = fetch_error(cfg("mnist", [f"http://127.0.0.1:{closed_port()}/"],
                          {FIRST: "crc32:00"}), tmp_path / "raw")
    assert f"data.digests[{FIRST!r}] = 'crc32:00' is not a digest" in msg
    assert "'sha256:<64 hex>'" in msg and "'md5:<32 hex>'" in msg
    msg = fetch_error(cfg("mnist", [], {}), tmp_path / "raw")
    assert "data.mirrors.mnist is empty" in msg
    assert_nothing_left(tmp_path / "raw")


KILL_SCRIPT = """
import json, sys
from pathlib import Path
from litpipe.schema import DataConfig
from litpipe.data.download import download_dataset
download_dataset(DataConfig.model_validate(json.loads(sys.argv[1])), Path(sys.argv[2]),
                 progress=False)
"""


def test_killed_download_then_rerun(server, tmp_path: Path) -> None:
    url, routes = server
    files = mnist_like(n=400, seed=7)  # ~300 kB trickled at ~5 kB/s: killed mid-stream
    routes.set("slow", files, "trickle")
    routes.set("fast", files)
    raw = tmp_path / "raw"
    slow = cfg("fashion_mnist", [f"{url}/slow/"], sha256_digests(files), timeout=5)
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, slow.model_dump_json(),
                             str(raw)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                p.stat().st_size > 1000 for p in (raw / PARTIAL).glob("*.download")):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    leftovers = files_under(raw)
    assert leftovers and all(p.startswith(f"{PARTIAL}/") for p in leftovers), leftovers
    assert files_under(raw / "fashion_mnist") == []

    fast = cfg("fashion_mnist", [f"{url}/fast/"], sha256_digests(files))
    dest = download_dataset(fast, raw, progress=False)
    assert load_idx_dataset(dest)["train"][0].shape == (400, 1, 28, 28)
    assert files_under(raw) == sorted(["fashion_mnist/MANIFEST.json"]
                                      + [f"fashion_mnist/{n}" for n in IDX_LOCALS])


def test_download_does_not_import_heavy_libraries() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, litpipe.stage, litpipe.data.download; "
         "print(sorted(m for m in ('torch', 'lightning', 'mlflow', 'torchvision') "
         "if m in sys.modules))"],
        capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_stage_failure_is_one_paragraph_without_traceback(tmp_path: Path) -> None:
    """What a user sees from `dvc repro` when every mirror fails."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["dataset"] = "mnist"
    params["data"]["mirrors"]["mnist"] = [f"http://127.0.0.1:{closed_port()}/"]
    params["data"]["retries"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, str(ROOT / "stages/download.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"litpipe download: error: could not fetch {FIRST}")
    assert "connection refused" in last and "Traceback" not in proc.stderr
    assert files_under(tmp_path / "data/raw") == []
