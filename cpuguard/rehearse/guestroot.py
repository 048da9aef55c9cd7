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
from pathlib import Path

#: Symlinks followed while resolving one path (Linux's MAXSYMLINKS is 40).
MAX_SYMLINKS = 40


class GuestRoot:
    """An extracted root directory of a guest, read without leaving it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(self, path: str) -> str | None:
        """The guest path ``path`` names once its symlinks are followed inside the root, or None."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            host = self.root.joinpath(*done, part)
            try:
                info = os.lstat(host)
            except OSError:
                return None
            if stat.S_ISLNK(info.st_mode):
                hops += 1
                if hops > MAX_SYMLINKS:
                    return None
                target = os.readlink(host)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            done.append(part)
        return "/" + "/".join(done)

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
