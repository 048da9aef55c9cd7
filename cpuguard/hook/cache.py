"""The hook's precompiled context, kept between calls as JSON, never stale.

Building a :class:`~cpuguard.hook.context.HookContext` reads YAML and libvirt's
cpu_map, with cpuguard's core loaded (about 100 ms); loading its plain form
(:mod:`cpuguard.hook.plain`) takes about a millisecond. The file records a
signature of every input (path, device, inode, size, mtime_ns, ctime_ns;
directories too, so an added policy file changes its directory's signature)
and is used only when every signature still matches, and not after the moment
the context itself says it expires (``expires_us``: a stored guest scan's age
and staleness are worded as of when the context was built).

A file changed twice within one timestamp tick, with the cache written in
between, would keep its signature (git calls this "racy clean":
https://git-scm.com/docs/racy-git). So a context is written only when every
input is older than :data:`RACY_SECONDS` when its build starts; until then each
call builds it afresh. The signatures are taken after the build, so an input
edited while it ran is newer than the build's start, and is not cached either.

Only a regular file owned by this user and writable by no one else, in a
directory that is the same (created mode 0700; a symbolic link is refused), is
read or written: the hook runs as root and decides by it. It is plain JSON, so
nothing in it is ever run; it is read with the ``_json`` scanner, without the
``json`` package (which loads ``re``).
"""

from __future__ import annotations

import os
import sys

from cpuguard import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy understands this form)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

DEFAULT_CACHE_DIR = "/var/cache/cpuguard"
RACY_SECONDS = 2.0
#: Changes whenever the layout of the plain context (cpuguard.hook.plain) or of this file does.
FORMAT = 4
#: The modules of the quick path, besides those the context is built with (cpuguard.hook.context).
QUICK_PATH_MODULES = ("entry", "events", "cache", "domainxml", "quick", "journal")


def stat_signature(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def header() -> list[Any]:
    return [FORMAT, __version__, sys.version]


def cache_file(cache_dir: str, config: str) -> str:
    """One cache per configuration directory, named by its device and inode: stable while the file
    is edited, distinct for daemons that each see their own /etc/cpuguard (mount namespaces)."""
    try:
        st = os.stat(os.path.dirname(config) or ".")
        where = f"{st.st_dev:x}-{st.st_ino:x}"
    except OSError:
        where = "none"
    return os.path.join(cache_dir, f"hook-{where}-{os.path.basename(config)}.json")


def _owned(st: os.stat_result, kind: int) -> bool:
    """Of this kind (S_IFREG, S_IFDIR), owned by this user, writable by no one else."""
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022 and (st.st_mode & 0o170000) == kind


def open_directory(cache_dir: str) -> int | None:
    """A descriptor of the cache directory if it is a real directory (no symbolic link) owned by
    this user that no one else can write; else None. In a directory another user can write, a
    rename could swap in another configuration's cache (one a root hook trusted) for this one's.
    Files are opened relative to the descriptor, so the directory checked is the one used."""
    try:
        fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if not _owned(os.fstat(fd), 0o040000):
        os.close(fd)
        return None
    return fd


def read_trusted(name: str, dir_fd: int) -> bytes | None:
    """The file's bytes if it is a regular file owned by this user and writable by no one else."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not _owned(os.fstat(fd), 0o100000):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class _Decoding:
    """What ``_json.make_scanner`` reads of a ``json.JSONDecoder``: plain JSON, no hooks."""

    def __init__(self) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        self.memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"not JSON: {name}")


def parse_json(text: str) -> Any:
    try:
        from _json import make_scanner  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # another Python than CPython
        import json

        return json.loads(text)
    value, end = make_scanner(_Decoding())(text, 0)  # type: ignore[arg-type,unused-ignore]
    if text[end:].strip():
        raise ValueError("extra data after the JSON value")
    return value


def load(cache_dir: str, config: str, now: float) -> dict[str, Any] | None:
    """The plain context if the file exists, is trustworthy, no input changed since and nothing in
    it has expired at ``now`` (seconds since the epoch); else None."""
    dir_fd = open_directory(cache_dir)
    if dir_fd is None:
        return None
    try:
        data = read_trusted(os.path.basename(cache_file(cache_dir, config)), dir_fd)
    finally:
        os.close(dir_fd)
    if data is None:
        return None
    try:
        saved = parse_json(data.decode("utf-8"))
        if saved["header"] != header():
            return None
        for path, signature in saved["inputs"]:
            if stat_signature(path) != signature:
                return None
        context: dict[str, Any] = saved["context"]
        expires = context["expires_us"]
        if expires is not None and now * 1e6 >= expires:
            return None  # a guest scan's age would read otherwise (cpuguard.hook.context.remarks_change)
    except (ValueError, KeyError, TypeError, StopIteration):
        return None  # half-written by a crash, or from another cpuguard: rebuild
    return context


def save(cache_dir: str, config: str, context: dict[str, Any], inputs: Iterable[str], now: float) -> bool:
    """Write the plain context unless an input is too recent to be trusted (see the module doc).
    ``now``: when the context's build began reading its inputs (the wall clock, seconds since the
    epoch). An input changed after that, or less than :data:`RACY_SECONDS` before, may differ from
    what was read, whatever the time now: its signature, taken here, must not vouch for it."""
    import json
    from contextlib import suppress

    paths = list(dict.fromkeys([*inputs, *quick_path_files()]))
    found = [stat_signature(path) for path in paths]
    newest = max((max(sig[3], sig[4]) for sig in found if sig is not None), default=0)
    if newest / 1e9 > now - RACY_SECONDS:
        return False
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    dir_fd = open_directory(cache_dir)
    if dir_fd is None:
        return False
    saved = {"header": header(), "inputs": [list(pair) for pair in zip(paths, found, strict=True)], "context": context}
    target = os.path.basename(cache_file(cache_dir, config))
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        with suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)  # left by a crash of an earlier process with this pid
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(saved, handle, ensure_ascii=False, separators=(",", ":"))
            os.replace(tmp, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)
    return True


def quick_path_files() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, f"{name}.py") for name in QUICK_PATH_MODULES]
