"""The download stage: fetch a dataset's raw files from its mirrors, verify, install.

Why it is built this way:

* **Every mirror, in order.** Each file is tried on every mirror of ``data.mirrors`` with a
  bounded retry with backoff for failures that may be transient
  (:mod:`litpipe.data.mirrors` sorts them); failures a retry cannot fix (404, a wrong
  digest) move straight on to the next mirror. When every mirror fails, one
  :class:`DownloadError` names each mirror tried and why.
* **Nothing is used unverified** (:mod:`litpipe.data.verify`), and archives are extracted
  only after every member is checked (:mod:`litpipe.data.archive`).
* **Atomic.** Downloads, decompression and tar extraction happen in the hidden
  ``<raw_root>/.partial/`` directory and are renamed into ``<raw_root>/<dataset>/`` only
  once complete and verified; ``MANIFEST.json`` is written last, so its presence means the
  set is complete. A killed run leaves debris only under ``.partial/``, which the next run
  deletes (never trusts) before starting.
* **Cheap reruns.** A file already in place is re-hashed and kept when it matches what the
  manifest (or the registry's content SHA-256) says, so a rerun fetches nothing.
* **Fast start.** Only the standard library, numpy (via the registry) and pydantic (via the
  config) are imported; torch, lightning and mlflow never are.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from litpipe.atomic import write_json
from litpipe.data.archive import safe_extract
from litpipe.data.datasets import DatasetSpec, RawFile, get_spec
from litpipe.data.mirrors import DownloadError, Permanent, Transient, fetch, file_url, redact
from litpipe.data.verify import (
    Expected,
    content_to,
    expected_digest,
    hash_file,
    is_archive,
    local_digest,
    size_of,
    tree_digest,
)
from litpipe.locks import lock, try_lock
from litpipe.repo import RAW
from litpipe.schema import DataConfig, Params

BACKOFF_S = 0.5  # first pause before a retry; doubles per retry ...
BACKOFF_MAX_S = 4.0  # ... up to this cap, so a retry budget of 10 costs under 40 s
PARTIAL = ".partial"
MANIFEST = "MANIFEST.json"


# --------------------------------------------------------------------------- installing

def _verify_and_install(tmp: Path, f: RawFile, expected: Expected, source: str,
                        dest: Path, partial: Path) -> str:
    """Check ``tmp`` against ``expected``; move its content into ``dest / f.local``.

    Decompressed content and extracted trees are produced under ``partial`` and renamed
    into place (same filesystem, so the rename is atomic). Returns the SHA-256 of what was
    installed (file content, or :func:`tree_digest` of a tree) for the manifest.
    """
    def mismatch(actual: str) -> Permanent:
        return Permanent(f"digest mismatch for {f.remote} from {source}: expected {expected}, "
                          f"got {expected.algorithm}:{actual}")

    if expected.algorithm == "md5":
        actual = hash_file(tmp, "md5")
        if actual != expected.value:
            raise mismatch(actual)
    target = dest / f.local
    if is_archive(f):
        if expected.algorithm == "sha256":
            actual = content_to(tmp, None)
            if actual != expected.value:
                raise mismatch(actual)
        staging = Path(tempfile.mkdtemp(prefix=f"{f.local}.", suffix=".extract", dir=partial))
        safe_extract(tmp, staging, f"{f.remote} (from {source})")
        produced = staging / f.local
        if not produced.is_dir() or produced.is_symlink():
            raise DownloadError(f"{f.remote} (verified, from {source}) has no top-level "
                                f"{f.local}/ directory; the registry entry for it is wrong")
        dest.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            # Move the stale tree aside (inside .partial) so the rename below cannot fail.
            os.replace(target, staging / ".old")
        local = tree_digest(produced)
        os.replace(produced, target)
        shutil.rmtree(staging, ignore_errors=True)
        return local
    plain = Path(tempfile.mkstemp(prefix=f"{f.local}.", suffix=".content", dir=partial)[1])
    try:
        actual = content_to(tmp, plain)
        if expected.algorithm == "sha256" and actual != expected.value:
            raise mismatch(actual)
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(plain, 0o644)  # mkstemp makes 0600; data files are not secrets
        os.replace(plain, target)
        return actual
    finally:
        plain.unlink(missing_ok=True)


def _fetch_file(f: RawFile, expected: Expected, mirrors: list[str], dest: Path,
                partial: Path, cfg: DataConfig, progress: bool) -> dict[str, Any]:
    """Install ``f`` from the first mirror that serves it verified; return its manifest entry."""
    tries: list[str] = []
    attempts = cfg.retries + 1
    for mirror in mirrors:
        url = file_url(mirror, f.remote)
        shown = redact(url)
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(BACKOFF_S * 2 ** (attempt - 1), BACKOFF_MAX_S))
            fd, name = tempfile.mkstemp(prefix=f"{f.remote}.", suffix=".download", dir=partial)
            os.close(fd)
            tmp = Path(name)
            try:
                fetch(url, tmp, cfg.timeout, progress, f.remote)
                local = _verify_and_install(tmp, f, expected, shown, dest, partial)
            except Permanent as exc:
                tries.append(f"{shown}: {exc}")
                break
            except Transient as exc:
                tries.append(f"{shown} (attempt {attempt + 1}/{attempts}): {exc}")
                continue
            except OSError as exc:  # writing under raw_root failed: disk full, permissions
                raise DownloadError(f"cannot store {f.local} under {dest}: {exc}; nothing "
                                    "partial was left there") from None
            finally:
                tmp.unlink(missing_ok=True)
            # Where it came from goes to the log only (see _entry).
            print(f"download: {f.remote} verified ({expected}) from {shown}", file=sys.stderr)
            return _entry(f, expected, dest / f.local, local)
    raise DownloadError(
        f"could not fetch {f.remote} for dataset {cfg.dataset!r} from any of its "
        f"{len(mirrors)} mirror(s); tried: " + "; ".join(tries) +
        f". Nothing partial was left in {dest}. Check data.mirrors.{cfg.dataset} (and "
        "data.timeout / data.retries) in params.yaml; if a mirror serves different but "
        "trusted files, set their digests under data.digests.")


def _entry(f: RawFile, expected: Expected, target: Path, local_sha256: str
           ) -> dict[str, Any]:
    """The manifest entry of an installed file: a function of the verified data only.

    Which mirror served it is printed, not recorded: ``data/raw`` is then the same bytes
    (and the same DVC hash) whichever mirror answered, so the mirrors, timeout and retries
    need not be params of the download stage, and switching to another mirror reruns
    nothing downstream. ``local_sha256`` is the hash of what lies on disk (content, or tree
    digest), so a rerun can re-verify even files whose expected digest is the MD5 of an
    archive that is no longer kept.
    """
    return {"local": f.local, "algorithm": expected.algorithm, "digest": expected.value,
            "local_sha256": local_sha256, "size": size_of(target)}


def _reusable(f: RawFile, expected: Expected, dest: Path, old: dict[str, Any]
              ) -> dict[str, Any] | None:
    """The manifest entry for ``f`` if ``dest`` already holds it verified, else None.

    The local copy is always re-hashed: against the content hash the previous manifest
    recorded when it was installed (if that manifest verified it with today's expected
    digest), or directly against a content SHA-256 from the registry or ``data.digests``.
    """
    target = dest / f.local
    if not target.exists() or target.is_symlink():
        return None
    entry = old.get(f.remote)
    if (isinstance(entry, dict) and entry.get("local") == f.local
            and entry.get("algorithm") == expected.algorithm
            and entry.get("digest") == expected.value
            and isinstance(entry.get("local_sha256"), str)):
        if local_digest(target) == entry["local_sha256"]:
            return {**_entry_shape(entry), "size": size_of(target)}
        return None
    if expected.algorithm == "sha256" and target.is_file() and not is_archive(f):
        if hash_file(target) == expected.value:
            return _entry(f, expected, target, expected.value)
    return None


def _entry_shape(entry: dict[str, Any]) -> dict[str, Any]:
    """An old manifest's entry in today's shape (a "mirror" key of older versions dropped)."""
    keys = ("local", "algorithm", "digest", "local_sha256", "size")
    return {k: entry.get(k) for k in keys}


# ---------------------------------------------------------------------------- manifest

def _read_manifest(path: Path) -> dict[str, Any]:
    """The previous manifest's file entries, or {} if absent or unreadable (then re-verify)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _bundled_manifest(spec: DatasetSpec) -> dict[str, Any]:
    """Manifest of a dataset shipped inside scikit-learn: what provides it, no files.

    The version comes from the package metadata: importing sklearn itself costs a second.
    """
    from importlib import metadata

    try:
        version = metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:
        raise DownloadError(f"dataset {spec.name!r} is bundled with scikit-learn, which is not "
                            "installed in this environment (pip install scikit-learn)") from None
    return {"dataset": spec.name, "files": {},
            "source": f"bundled with scikit-learn {version}; nothing to download",
            "sklearn_version": version}


@contextlib.contextmanager
def _exclusive(raw_root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``raw_root`` so two downloads never share ``.partial``.

    Locks the directory itself (no lock file to leave behind); on a filesystem that
    refuses locks the download runs unlocked.
    """
    try:
        fd = try_lock(raw_root)
        if fd is None:
            print(f"download: waiting for another download into {raw_root}", file=sys.stderr)
            fd = lock(raw_root)
    except OSError:
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


# ------------------------------------------------------------------------------- entry

def download(params: Params, raw_root: Path = RAW) -> str:
    """The download stage: ``raw_root/<data.dataset>`` holds the verified raw files."""
    return str(download_dataset(params.data, raw_root))


def download_dataset(cfg: DataConfig, raw_root: Path, *, progress: bool = True) -> Path:
    """Make ``raw_root/<cfg.dataset>`` hold the dataset's verified raw files; return it.

    MNIST-family files are stored decompressed under their registry ``local`` names; the
    CIFAR-10 tarball is extracted to ``cifar-10-batches-py/``; ``digits`` (bundled with
    scikit-learn) gets only a manifest. Raises :class:`DownloadError` with a one-paragraph
    message on any failure, leaving nothing partial in the dataset directory.
    """
    spec = get_spec(cfg.dataset)
    raw_root = Path(raw_root)
    dest = raw_root / spec.name
    partial = raw_root / PARTIAL
    raw_root.mkdir(parents=True, exist_ok=True)
    with _exclusive(raw_root):
        # Debris of a killed run is never trusted; with the lock held, nobody else uses it.
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            if not spec.files:
                write_json(dest / MANIFEST, _bundled_manifest(spec))
                return dest
            mirrors = cfg.mirrors.get(spec.name) or []
            expected = {f.remote: expected_digest(f, cfg.digests) for f in spec.files}
            old = _read_manifest(dest / MANIFEST)
            files: dict[str, Any] = {}
            for f in spec.files:
                entry = _reusable(f, expected[f.remote], dest, old)
                if entry is None:
                    if not mirrors:
                        raise DownloadError(
                            f"data.mirrors.{spec.name} is empty, and {f.remote} is not "
                            f"already in {dest}: list at least one mirror in params.yaml")
                    # From here on the old manifest no longer describes the directory.
                    (dest / MANIFEST).unlink(missing_ok=True)
                    entry = _fetch_file(f, expected[f.remote], mirrors, dest, partial, cfg,
                                        progress)
                files[f.remote] = entry
            write_json(dest / MANIFEST, {"dataset": spec.name, "files": files})
            return dest
        finally:
            shutil.rmtree(partial, ignore_errors=True)
