"""Which files a scan covers: paths, directories, and the libraries they load.

Directories are walked recursively in sorted order, following symbolic
links but never entering a directory twice (so link loops end); a file
reached by several names is scanned once. Only regular files are opened:
a FIFO or device in a scanned tree must not block or be read.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cpuguard.errors import BadInput
from cpuguard.guest import ldpaths
from cpuguard.guest.errors import GuestDataError

# Where the dynamic loader looks after DT_RUNPATH and LD_LIBRARY_PATH on
# Debian-style x86-64 systems (ld.so(8), /etc/ld.so.conf.d/x86_64-linux-gnu.conf).
DEFAULT_LIBRARY_DIRS = ldpaths.DEFAULT_DIRS


@dataclass(frozen=True)
class Target:
    """A file to scan, or a path that could not be (``problem`` says why)."""

    path: str
    problem: str | None = None
    identity: tuple[int, int] | None = None  # (st_dev, st_ino)


def _describe(exc: OSError) -> str:
    if exc.errno is not None and exc.errno == 40:  # ELOOP
        return "symbolic link loop"
    return exc.strerror or str(exc)


def named_path_problem(path: Path) -> str | None:
    """Why a path named on the command line cannot be scanned, or None.

    A path the user typed that does not exist or cannot be read is bad input
    (a typo must not let a CI gate pass); problems found *inside* a directory
    are only skipped entries of the report.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no such file"  # as for a missing VM or host file
    except OSError as exc:
        return f"cannot read: {_describe(exc).lower()}"
    try:
        if stat.S_ISDIR(info.st_mode):
            os.listdir(path)
        elif stat.S_ISREG(info.st_mode):
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        else:
            return "not a regular file"
    except OSError as exc:
        return f"cannot read: {_describe(exc).lower()}"
    return None


def require_readable(paths: Sequence[Path]) -> None:
    """Refuse (BadInput, exit 2) the first path named on the command line that cannot be read."""
    for path in paths:
        problem = named_path_problem(path)
        if problem is not None:
            raise BadInput(path, problem)


def expand(paths: Sequence[Path]) -> Iterator[Target]:
    """Every regular file under ``paths``, each once, plus a Target per problem."""
    seen_files: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()
    for path in paths:
        yield from _expand_one(str(path), seen_files, seen_dirs, top=True)


def _expand_one(
    path: str, seen_files: set[tuple[int, int]], seen_dirs: set[tuple[int, int]], top: bool
) -> Iterator[Target]:
    try:
        info = os.stat(path)
    except OSError as exc:
        yield Target(path, _describe(exc))
        return
    identity = (info.st_dev, info.st_ino)
    if stat.S_ISDIR(info.st_mode):
        if identity in seen_dirs:
            if os.path.islink(path):
                yield Target(path, "symbolic link to a directory already scanned (loop?)")
            return
        seen_dirs.add(identity)
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            yield Target(path, _describe(exc))
            return
        for name in names:
            yield from _expand_one(os.path.join(path, name), seen_files, seen_dirs, top=False)
        return
    if not stat.S_ISREG(info.st_mode):
        if top:
            yield Target(path, "not a regular file")
        return
    if identity in seen_files:
        return
    seen_files.add(identity)
    yield Target(path, identity=identity)


def _read_host_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(ldpaths.MAX_CONF_BYTES + 1)
    except OSError:
        return None


def library_search_dirs(environ: Mapping[str, str] = os.environ, ld_so_conf: str = "/etc/ld.so.conf") -> list[str]:
    """LD_LIBRARY_PATH, then ld.so.conf and the default directories, read as a guest's are
    (:func:`cpuguard.guest.ldpaths.search_dirs`, here with this machine's files)."""
    dirs = [d for d in environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    try:
        dirs += ldpaths.search_dirs(_read_host_file, lambda pattern: sorted(glob.glob(pattern)), conf=ld_so_conf)
    except GuestDataError:
        dirs += DEFAULT_LIBRARY_DIRS  # an absurd ld.so.conf: the loader's own defaults
    unique: list[str] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def resolve_library(name: str, origin: str, runpath: Sequence[str], search: Sequence[str]) -> str | None:
    """The file the loader would map for DT_NEEDED ``name`` of the object at ``origin`` (its
    RUNPATH/RPATH entries ``runpath``, then ``search``), worked out as for a guest
    (:func:`cpuguard.guest.ldpaths.resolve`) on this machine's files. A relative name holding
    a slash is taken relative to the object's directory."""
    if "/" in name and not name.startswith("/") and "$" not in name:
        candidate = os.path.join(os.path.dirname(origin), name)
        return candidate if os.path.isfile(candidate) else None
    try:
        return ldpaths.resolve(
            name,
            rpath=(),
            runpath=list(runpath),
            origin=os.path.dirname(os.path.realpath(origin)),
            dirs=search,
            exists=os.path.isfile,
        )
    except GuestDataError:
        return None  # a RUNPATH of absurd length: the loader would find nothing there either
