"""Read-only access to one guest tree mounted in the libguestfs appliance.

Every call goes to the appliance's daemon, which works below the guest's own
mounted root: a path, and every symlink in it, resolves inside the guest,
never on the host.
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Iterator
from typing import Any

from cpuguard.guest import dpkg

MERGED_USR = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
MAX_SMALL_FILE = 4 * 1024 * 1024  # unit files, ld.so.conf, os-release
READ_PIECE = 1024 * 1024


def read_pieces(g: Any, path: str, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of a guest file (libguestfs handle ``g``), one ``pread`` round
    trip per piece.

    read_file and download stream through libguestfs' FileOut protocol, which
    costs a fixed 0.15-0.45 s per file in a TCG appliance; a pread is a few
    milliseconds (docs/guests.md#performance).
    """
    offset = 0
    while offset < size:
        piece: bytes = g.pread(path, min(READ_PIECE, size - offset), offset)
        if not piece:
            return  # the file shrank: a running guest's disk
        yield piece
        offset += len(piece)


class GuestTree:
    """Files of a mounted guest, through a libguestfs handle (``g``)."""

    def __init__(self, g: Any) -> None:
        self.g = g
        self.root_links = self._root_links()  # merged /usr: "/bin" -> "/usr/bin"

    def _mode(self, path: str, *, follow: bool) -> int | None:
        """The file type and mode bits of a guest path (``follow``: its symlinks resolved in the
        guest, as stat(2)), or None when there is no such file.

        statns and lstatns are one C call in the appliance's daemon; is_file, is_dir and
        is_symlink fork a chroot helper on each call (libguestfs daemon/is.ml), 5-25 times slower.
        """
        try:
            info = self.g.statns(path) if follow else self.g.lstatns(path)
        except RuntimeError:
            return None
        return int(info["st_mode"])

    def _root_links(self) -> dict[str, str]:
        links = {}
        for name in MERGED_USR:
            mode = self._mode(name, follow=False)
            if mode is None or not stat.S_ISLNK(mode):
                continue
            try:
                target = self.g.readlink(name)
            except RuntimeError:
                continue
            links[name] = dpkg.normalise(posixpath.join("/", target)) or name
        return links

    def read_small(self, path: str, limit: int = MAX_SMALL_FILE) -> bytes | None:
        """A small regular file's bytes (symlinks resolved in the guest), or None."""
        try:
            info = self.g.statns(path)  # stat(2) in the guest's root: symlinks resolved inside the guest
            if not stat.S_ISREG(info["st_mode"]) or info["st_size"] > limit:
                return None
            return b"".join(read_pieces(self.g, path, int(info["st_size"])))
        except RuntimeError:
            return None

    def realpath(self, path: str) -> str | None:
        try:
            real: str = self.g.realpath(path)
            return real
        except RuntimeError:
            return None

    def glob(self, pattern: str) -> list[str]:
        try:
            return sorted(self.g.glob_expand(pattern))
        except RuntimeError:
            return []

    def is_file(self, path: str) -> bool:
        mode = self._mode(path, follow=True)
        return mode is not None and stat.S_ISREG(mode)

    def is_real_dir(self, path: str) -> bool:
        mode = self._mode(path, follow=False)
        return mode is not None and stat.S_ISDIR(mode)
