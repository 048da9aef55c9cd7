"""Read files of an extracted guest root (a restored backup) as the guest would see them.

Every path is resolved component by component *inside* the root: an absolute
symlink means the guest's own root, ``..`` stops at it, so a customer's
``/usr/local/bin/x -> /etc/shadow`` names the guest's file, never the host's
(path_resolution(7); the same rule the guest inspection follows).
"""

from __future__ import annotations

import glob as globmodule
import os
import posixpath
import stat
from collections.abc import Callable
from pathlib import Path

#: Symlinks followed while resolving one path (Linux's MAXSYMLINKS is 40).
MAX_SYMLINKS = 40


#: What one path component is: ``"link"``, ``"dir"``, ``"file"``, ``"other"``, or None (absent).
Kind = Callable[[str], str | None]


def resolve_inside(path: str, kind: Kind, readlink: Callable[[str], str]) -> str | None:
    """The path ``path`` names once its symlinks are followed inside a root, or None.

    ``kind(p)`` and ``readlink(p)`` are asked only about paths whose parent is
    already resolved (no symlink in them), so whatever answers them never follows
    a link itself: an extracted root (:class:`GuestRoot`) and a guest mounted in
    the inspection appliance (:mod:`cpuguard.rehearse.diskworker`) resolve alike.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = "/" + "/".join([*done, part])
        what = kind(here)
        if what is None:
            return None
        if what == "link":
            hops += 1
            if hops > MAX_SYMLINKS:
                return None
            target = readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        if parts and what != "dir":
            return None  # a file in the middle of a path
        done.append(part)
    return "/" + "/".join(done)


def kind_of_mode(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


class GuestRoot:
    """An extracted root directory of a guest, read without leaving it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _kind(self, path: str) -> str | None:
        try:
            return kind_of_mode(os.lstat(self.root / path.lstrip("/")).st_mode)
        except OSError:
            return None

    def resolve(self, path: str) -> str | None:
        """The guest path ``path`` names once its symlinks are followed inside the root, or None."""
        return resolve_inside(path, self._kind, lambda p: os.readlink(self.root / p.lstrip("/")))

    def host_path(self, path: str) -> Path | None:
        """Where the regular file at guest ``path`` lies on this machine, or None."""
        resolved = self.resolve(path)
        if resolved is None:
            return None
        host = self.root / resolved.lstrip("/")
        try:
            return host if stat.S_ISREG(os.lstat(host).st_mode) else None
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return self.host_path(path) is not None

    def read_file(self, path: str) -> bytes | None:
        host = self.host_path(path)
        if host is None:
            return None
        try:
            return host.read_bytes()
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        """Guest paths matching ``pattern`` (its directory part resolved inside the root)."""
        directory = self.resolve(posixpath.dirname(pattern) or "/")
        if directory is None:
            return []
        base = self.root / directory.lstrip("/")
        names = globmodule.glob(globmodule.escape(str(base)) + "/" + posixpath.basename(pattern))
        return sorted(posixpath.join(directory, os.path.basename(n)) for n in names)
