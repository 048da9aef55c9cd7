"""The hook's precompiled context: kept between calls, never stale.

Building a :class:`~cpuguard.hook.context.HookContext` reads YAML and libvirt's
cpu_map (about 100 ms); loading it from the cache takes well under a
millisecond. The cache records a signature of every input (path, device,
inode, size, mtime_ns, ctime_ns; directories too, so an added policy file
changes its directory's signature) and is used only when every signature
still matches.

A file changed twice within one timestamp tick, with the cache built in
between, would keep its signature (git calls this "racy clean":
https://git-scm.com/docs/racy-git). So a context is written to the cache only
when every input is older than :data:`RACY_SECONDS`; until then each call
builds it afresh.

The cache is a pickle, so only files owned by this user and writable by no one
else are loaded; the directory is created mode 0700.

Decisions made with a context are remembered next to it (:mod:`cpuguard.hook.memo`);
a new context clears them.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from cpuguard import __version__
from cpuguard.hook import memo
from cpuguard.hook.context import HookContext, build_context

DEFAULT_CACHE_DIR = Path("/var/cache/cpuguard")
FORMAT = 2
RACY_SECONDS = 2.0

Signature = tuple[int, int, int, int, int] | None
Signatures = tuple[tuple[str, Signature], ...]


def stat_signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def signatures(paths: Iterable[str]) -> Signatures:
    return tuple((p, stat_signature(p)) for p in paths)


def _header() -> tuple[int, str, str]:
    return (FORMAT, __version__, sys.version)


def cache_file(cache_dir: Path, config_path: Path) -> Path:
    """One cache per configuration directory (:func:`cpuguard.hook.memo.config_tag`)."""
    return cache_dir / f"{memo.config_tag(str(config_path))}.pickle"


def load(cache_dir: Path, config_path: Path) -> HookContext | None:
    """The cached context if it exists, is trustworthy and no input changed since; else None."""
    # only our own file that no one else could have written: a pickle runs code when loaded
    data = memo.read_trusted(str(cache_file(cache_dir, config_path)))
    if data is None:
        return None
    try:
        header, saved, context = pickle.loads(data)  # noqa: S301 - our own file, checked above
    except Exception:
        return None  # half-written by a crash, or from another cpuguard: rebuild
    if header != _header() or not isinstance(context, HookContext) or saved != signatures(context.inputs):
        return None
    return context


def save(cache_dir: Path, config_path: Path, context: HookContext, now: float) -> bool:
    """Write the cache unless an input is too recent to be trusted (see the module doc)."""
    saved = signatures(context.inputs)
    newest = max((max(sig[3], sig[4]) for _, sig in saved if sig is not None), default=0)
    if newest / 1e9 > now - RACY_SECONDS:
        return False
    import tempfile

    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = pickle.dumps((_header(), saved, context), protocol=pickle.HIGHEST_PROTOCOL)
    fd, tmp = tempfile.mkstemp(prefix=".hook-", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, cache_file(cache_dir, config_path))
    except BaseException:
        os.unlink(tmp)
        raise
    memo.clear(str(cache_dir), str(config_path))  # decisions remembered with the old context are stale
    return True


def load_or_build(
    config_path: Path,
    cache_dir: Path | None,
    *,
    build: Callable[[Path], HookContext] = build_context,
    now: Callable[[], float] | None = None,
) -> HookContext:
    """The context for ``config_path``, from the cache when it is current.

    ``cache_dir`` None disables the cache. A cache that cannot be written
    (read-only directory, full disk) costs speed, never a decision.
    """
    if cache_dir is not None:
        context = load(cache_dir, config_path)
        if context is not None:
            return context
    context = build(config_path)
    if cache_dir is not None:
        import contextlib
        import time

        with contextlib.suppress(OSError):
            save(cache_dir, config_path, context, (now or time.time)())
    return context
