"""Extracting a tarball without letting it write anywhere but where it is told.

A verified archive can still be hostile if its digest was (mis)configured by hand, so every
member is checked before anything is written, and ``tarfile``'s ``filter="data"`` checks
again while extracting.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from litpipe.data.mirrors import DownloadError, Permanent


def _refuse(label: str, member: tarfile.TarInfo, why: str) -> DownloadError:
    return DownloadError(
        f"{label}: refusing archive member {member.name!r}: {why}. The archive matched "
        "its expected digest, so the digest itself (data.digests or the registry) points at "
        "an unsafe file; nothing was extracted")


def _escapes(path: str) -> bool:
    p = PurePosixPath(path)
    return p.is_absolute() or ".." in p.parts or path.startswith(("/", "\\"))


def check_members(label: str, members: list[tarfile.TarInfo]) -> None:
    """Refuse any member that could write outside the extraction directory.

    Absolute names, ``..`` components, links whose target leaves the tree, paths that go
    through a symlink in the archive, and device files are all refused, naming the member.
    ``tarfile``'s ``filter="data"`` checks the same at extraction time; this check comes
    first so that the message names the member and nothing at all is written.
    """
    symlinks: set[PurePosixPath] = set()
    for m in members:
        name = PurePosixPath(m.name)
        if _escapes(m.name):
            raise _refuse(label, m, "it would be written outside the target directory")
        through = [s for s in symlinks if s in name.parents]
        if through:
            raise _refuse(label, m, f"its path goes through the symlink '{through[0]}'")
        if m.issym():
            target = (name.parent / m.linkname).as_posix()
            if PurePosixPath(m.linkname).is_absolute() or os.path.normpath(
                    target).split("/")[0] == "..":
                raise _refuse(label, m, f"it is a symlink to {m.linkname!r}, outside the "
                                          "target directory")
            symlinks.add(name)
        elif m.islnk():
            if _escapes(m.linkname) or os.path.normpath(m.linkname).split("/")[0] == "..":
                raise _refuse(label, m, f"it is a hard link to {m.linkname!r}, outside the "
                                          "target directory")
        elif not (m.isfile() or m.isdir()):
            raise _refuse(label, m, "it is a device or FIFO, not a file or directory")


def safe_extract(archive: Path, dest: Path, label: str | None = None) -> None:
    """Extract ``archive`` into ``dest`` after :func:`check_members`, with filter="data".

    ``label`` names the archive in messages (default: its file name).
    """
    label = label or archive.name
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            check_members(label, members)
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as exc:
                member = getattr(exc, "tarinfo", None)
                name = member.name if member is not None else "?"
                raise DownloadError(f"{label}: refusing archive member {name!r}: "
                                    f"{exc}; nothing usable was extracted") from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise Permanent(f"not a valid tar archive ({exc})") from None
