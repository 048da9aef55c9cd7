"""Files owned by Debian packages, from dpkg's own database inside a guest.

Formats, as dpkg writes them (dpkg(1) "FILES", dpkg-divert(1), and dpkg's
``src/main/filesdb.c`` / ``src/main/divertdb.c`` behaviour as documented there):

* ``/var/lib/dpkg/info/PACKAGE[:ARCH].list``: one absolute path per line,
  directories included, the root written as ``/.``.
* ``/var/lib/dpkg/diversions``: groups of three lines, the diverted name, the
  name its file was moved to, and the diverting package (``:`` for a local
  diversion made by the administrator).

On a merged-/usr system (``/bin -> usr/bin`` and friends, the default since
Debian 12 and Ubuntu 22.04) a list may name ``/bin/bash`` while the file lives
at ``/usr/bin/bash``: :func:`canonical` maps one onto the other.

Paths are bytes in the guest; they are decoded like :func:`os.fsdecode`
(UTF-8, undecodable bytes as surrogates) so that they compare equal to the
names a file walk returns. Nothing here touches a file system.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterable, Mapping

from cpuguard.guest.errors import GuestDataError

#: Longest path kept (Linux's PATH_MAX); longer lines are ignored.
MAX_PATH_BYTES = 4096
#: Most ``*.list`` files read; a large Debian system has a few thousand packages.
MAX_LIST_FILES = 100_000
#: Most bytes of all lists together; a large system has tens of MiB.
MAX_LIST_BYTES = 512 * 1024 * 1024
#: Most owned paths; a large system has a few hundred thousand.
MAX_PATHS = 4_000_000
#: Most bytes of the diversions file; a system has a few dozen diversions.
MAX_DIVERSIONS_BYTES = 16 * 1024 * 1024

LOCAL_DIVERSION = ":"


def normalise(path: str) -> str | None:
    """``path`` without empty or ``.`` components and without a trailing slash, or None
    for a name that is not absolute, holds NUL or ``..``, or is too long."""
    if not path.startswith("/") or "\x00" in path or len(path) > MAX_PATH_BYTES:
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:  # dpkg never writes one; resolving it needs the guest's symlinks
        return None
    return "/" + "/".join(parts)


def _lines(data: bytes) -> Iterable[str]:
    for line in io.BytesIO(data):  # one line at a time: a list file may be large
        raw = line.rstrip(b"\n").removesuffix(b"\r")
        if raw and len(raw) <= MAX_PATH_BYTES:
            yield raw.decode("utf-8", "surrogateescape")


def owned_paths(lists: Iterable[tuple[str, bytes]]) -> frozenset[str]:
    """Every path named by dpkg's ``info/*.list`` files, given as ``(name, contents)``.

    Lines that are not absolute paths are ignored; too many files, bytes or paths
    raise :class:`GuestDataError`.
    """
    owned: set[str] = set()
    total = 0
    for count, (name, data) in enumerate(lists, start=1):
        if count > MAX_LIST_FILES:
            raise GuestDataError(f"dpkg database: more than {MAX_LIST_FILES:,} package file lists")
        total += len(data)
        if total > MAX_LIST_BYTES:
            raise GuestDataError(f"dpkg database: package file lists exceed {MAX_LIST_BYTES // 2**20} MiB ({name})")
        for line in _lines(data):
            path = normalise(line)
            if path is not None:
                owned.add(path)
                if len(owned) > MAX_PATHS:
                    raise GuestDataError(f"dpkg database: more than {MAX_PATHS:,} owned paths")
    return frozenset(owned)


def _diversions(diversions: bytes) -> list[tuple[str, str, str]]:
    if len(diversions) > MAX_DIVERSIONS_BYTES:
        raise GuestDataError(f"dpkg diversions: larger than {MAX_DIVERSIONS_BYTES // 2**20} MiB")
    lines = diversions.decode("utf-8", "surrogateescape").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 3:
        raise GuestDataError(f"dpkg diversions: {len(lines)} lines, not groups of three")
    return [(lines[i], lines[i + 1], lines[i + 2]) for i in range(0, len(lines), 3)]


def diverted_paths(diversions: bytes) -> frozenset[str]:
    """Names that ``/var/lib/dpkg/diversions`` puts under a package's ownership.

    A package's diversion moves another package's file aside (``/bin/sh`` to
    ``/bin/sh.distrib``, a name no ``*.list`` holds) and installs its own under the
    original name: both are package files. A local diversion (package ``:``) moves
    the file aside for the administrator's own, so only the moved-to name counts;
    see :func:`local_diversions`.
    """
    owned: set[str] = set()
    for original, moved_to, package in _diversions(diversions):
        names = (moved_to,) if package == LOCAL_DIVERSION else (original, moved_to)
        owned.update(path for path in map(normalise, names) if path is not None)
    return frozenset(owned)


def local_diversions(diversions: bytes) -> frozenset[str]:
    """Names the administrator diverted (``dpkg-divert --local``): the file there is
    their own even though a package's ``*.list`` still names the path."""
    return frozenset(
        path
        for original, _, package in _diversions(diversions)
        if package == LOCAL_DIVERSION and (path := normalise(original)) is not None
    )


def canonical(path: str, root_links: Mapping[str, str]) -> str:
    """``path`` with a merged-/usr alias replaced by the directory it links to.

    ``root_links`` maps a guest directory symlink to its target as the guest holds it,
    absolute or relative to the link's directory (``{"/bin": "usr/bin"}`` or
    ``{"/bin": "/usr/bin"}``). The longest matching alias wins; a path under no
    alias, or a malformed one, is returned unchanged. Pure string work: nothing
    on any file system is looked at.
    """
    clean = normalise(path)
    if clean is None:
        return path
    best, best_target = "", ""
    for alias, target in root_links.items():
        link = normalise(alias)
        if link and link != "/" and len(link) > len(best) and (clean == link or clean.startswith(link + "/")):
            best, best_target = link, target
    if not best:
        return clean
    # lexical: ".." above the guest's root stays at its root, as it does inside the guest
    resolved = normalise(posixpath.normpath(posixpath.join(posixpath.dirname(best), best_target)))
    if resolved is None:
        return clean
    return resolved + clean[len(best) :] if resolved != "/" else clean[len(best) :] or "/"
