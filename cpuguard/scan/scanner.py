"""``scan_paths``: scan files and directories and return a :class:`ScanReport`.

Every file is identified and hashed here; unchanged files come from the
cache; the others are analysed one file per task, in a process pool when
there is enough work for more than one CPU (largest first, so that a big
file does not start last). A worker reads one file's sections at a time,
so memory is bounded by the largest file's metadata and code section, not
by the tree. A file that cannot be scanned becomes a skipped entry with a
reason; only the caller decides whether "nothing scanned" is an error.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from cpuguard.scan import elf
from cpuguard.scan.cache import ScanCache, default_cache_dir
from cpuguard.scan.records import FileScan, ScanReport
from cpuguard.scan.summary import satisfying_cpus, totals
from cpuguard.scan.walk import Target, expand, library_search_dirs, resolve_library

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

NOT_ELF = "not an ELF file"
PARALLEL_MIN_BYTES = 4 << 20  # less work than this is done faster without a pool
CHANGED = "the file changed while it was being scanned"


class DefaultCache(Enum):
    """Use :func:`default_cache_dir` (the sentinel default of ``cache_dir``)."""

    DEFAULT = "default"


@dataclass(frozen=True)
class Progress:
    files_done: int
    files_total: int  # found so far: every file of the named paths, plus libraries as they are followed
    bytes_done: int  # of files analysed (cache hits count as done)
    bytes_total: int
    path: str
    stage: str = "done"  # done (cached, skipped or analysed) | read (hashed, to be analysed)


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class _Job:
    index: int
    path: str
    sha256: str
    size: int
    identity: tuple[int, int, int]  # (st_ino, st_size, st_mtime_ns) when hashed
    info: os.stat_result
    name_key: str  # the name-derived part of the cache key (see _name_key)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _name_key(path: str) -> str:
    """What a scan of ``path`` may take from its file name: the dispatching-library pattern it matches.

    A library is judged by its DT_SONAME, which is the same under every
    name; only a file without one is judged by its name, so a cached
    answer is shared only between names that match the same pattern.
    """
    from cpuguard.scan.knowledge import load_dispatch_knowledge

    return load_dispatch_knowledge().library_pattern(os.path.basename(path)) or ""


def _warm_up() -> None:
    """Load what every worker needs before forking, so that workers inherit it."""
    from cpuguard.levels import level_features
    from cpuguard.scan.analyze import _baseline
    from cpuguard.scan.decode import code_tables
    from cpuguard.scan.features import default_feature_table
    from cpuguard.scan.knowledge import load_dispatch_knowledge

    code_tables()
    default_feature_table().notable(level_features("x86-64-v1"))
    default_feature_table().probes()
    load_dispatch_knowledge()
    _baseline()


class _Scan:
    def __init__(self, cache: ScanCache | None, progress: ProgressCallback | None, jobs: int) -> None:
        self.cache = cache
        self.progress = progress
        self.jobs = jobs
        self.results: list[FileScan | None] = []
        self.files_done = 0
        self.files_found = 0  # files to scan, known before any is opened (see scan_paths)
        self.bytes_done = 0
        self.bytes_total = 0
        self.executor: Executor | None = None

    def report(self, path: str, stage: str = "done") -> None:
        if self.progress is not None:
            total = max(self.files_found, len(self.results))
            event = Progress(self.files_done, total, self.bytes_done, self.bytes_total, path, stage)
            self.progress(event)

    def done(self, scan: FileScan, index: int | None = None) -> FileScan:
        if index is None:
            self.results.append(scan)
        else:
            self.results[index] = scan
        self.files_done += 1
        self.report(scan.path)
        return scan

    def open(self, target: Target) -> _Job | FileScan:
        """Identify and hash one file: a job to analyse, or a finished (cached/skipped) result."""
        path = target.path
        if target.problem is not None:
            return self.done(FileScan(path, skipped=target.problem))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            return self.done(FileScan(path, skipped=_reason(exc)))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return self.done(FileScan(path, skipped="not a regular file"))
            size = info.st_size
            if size == 0:
                return self.done(FileScan(path, skipped="empty file"))
            name_key = _name_key(path)
            known = self.cache.known_digest(info) if self.cache else None
            cached = self.cache.get(known, path, name_key) if self.cache and known else None
            if cached is not None:
                self.bytes_total += size
                self.bytes_done += size
                return self.done(cached)
            try:
                elf.sniff(os.pread(fd, 64, 0))
                with os.fdopen(os.dup(fd), "rb") as handle:
                    sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
            except elf.NotElf:
                return self.done(FileScan(path, size=size, skipped=NOT_ELF))
            except elf.ElfError as exc:
                return self.done(FileScan(path, size=size, skipped=str(exc)))
            except OSError as exc:
                return self.done(FileScan(path, size=size, skipped=_reason(exc)))
        finally:
            os.close(fd)
        cached = self.cache.get(sha256, path, name_key) if self.cache else None
        if cached is not None and self.cache is not None:
            self.cache.remember_digest(info, sha256)
            self.bytes_total += size
            self.bytes_done += size
            return self.done(cached)
        self.results.append(None)
        self.bytes_total += size
        return _Job(len(self.results) - 1, path, sha256, size, _identity(info), info, name_key)

    def finish(self, job: _Job, scan: FileScan) -> FileScan:
        try:
            changed = _identity(os.stat(job.path)) != job.identity
        except OSError:
            changed = True
        if changed:
            scan = FileScan(job.path, job.sha256, job.size, skipped=CHANGED)
        elif self.cache is not None:
            self.cache.put(scan, job.name_key)
            if scan.scanned:
                self.cache.remember_digest(job.info, job.sha256)
        self.bytes_done += job.size
        return self.done(scan, job.index)

    def run(self, jobs: list[_Job]) -> Iterable[FileScan]:
        """Analyse ``jobs``, yielding each result as it is ready."""
        from cpuguard.scan.analyze import analyze_file  # the decoder loads only when needed

        jobs = sorted(jobs, key=lambda j: -j.size)
        work = sum(j.size for j in jobs)
        if self.jobs > 1 and len(jobs) > 1 and work >= PARALLEL_MIN_BYTES:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            if self.executor is None:
                _warm_up()
                context = multiprocessing.get_context("fork")
                self.executor = ProcessPoolExecutor(self.jobs, mp_context=context)
            futures: dict[Future[FileScan], _Job] = {
                self.executor.submit(analyze_file, j.path, j.sha256, os.path.basename(j.path)): j for j in jobs
            }
            for future in as_completed(futures):
                job = futures[future]
                yield self.finish(job, replace(future.result(), size=job.size))
            return
        for job in jobs:
            scan = analyze_file(job.path, job.sha256, os.path.basename(job.path))
            yield self.finish(job, replace(scan, size=job.size))

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()


def scan_paths(
    paths: Sequence[Path],
    *,
    follow_needed: bool = False,
    cache_dir: Path | DefaultCache | None = DefaultCache.DEFAULT,
    progress: ProgressCallback | None = None,
    jobs: int | None = None,
    environ: Mapping[str, str] = os.environ,
    library_dirs: Sequence[str] | None = None,
    now: Callable[[], datetime] = _utcnow,
) -> ScanReport:
    """Scan ELF files and directories; ``follow_needed`` adds their DT_NEEDED libraries.

    ``cache_dir`` None disables the cache; ``jobs`` caps the worker
    processes (default: the CPUs this process may use); ``library_dirs``
    replaces the loader's search path (default: LD_LIBRARY_PATH from
    ``environ``, /etc/ld.so.conf, the standard directories).
    """
    if cache_dir is DefaultCache.DEFAULT:
        cache_dir = default_cache_dir(environ)
    cache = ScanCache(cache_dir) if isinstance(cache_dir, Path) else None
    search = list(library_dirs) if library_dirs is not None else library_search_dirs(environ)
    state = _Scan(cache, progress, jobs if jobs is not None else default_jobs())
    seen: set[tuple[int, int]] = set()
    missing: set[str] = set()
    queue: deque[Target] = deque(expand(paths))
    state.files_found = len(queue)  # the walk is done first, so progress has a true total

    def follow(targets: list[Target]) -> None:
        state.files_found += len(targets)
        queue.extend(targets)

    try:
        while queue:
            pending: list[_Job] = []
            while queue:
                target = queue.popleft()
                if target.identity is not None:
                    if target.identity in seen:
                        state.files_found -= 1
                        continue
                    seen.add(target.identity)
                opened = state.open(target)
                if isinstance(opened, _Job):
                    pending.append(opened)
                    state.report(opened.path, "read")  # the bar moves while big files are hashed
                elif follow_needed:
                    follow(_needed_targets(opened, search, seen, missing))
            for scan in state.run(pending) if pending else ():
                if follow_needed:
                    follow(_needed_targets(scan, search, seen, missing))
    finally:
        state.close()
    files = tuple(r for r in state.results if r is not None)
    cpus = partial(cache.suggestions, compute=satisfying_cpus) if cache else satisfying_cpus
    return ScanReport(files, totals(files, cpus), now())


def _needed_targets(
    scan: FileScan, search: Sequence[str], seen: set[tuple[int, int]], missing: set[str]
) -> list[Target]:
    targets: list[Target] = []
    for name in scan.needed_libraries:
        found = resolve_library(name, scan.path, scan.runpath, search)
        if found is None:
            if name not in missing:
                missing.add(name)
                targets.append(Target(name, f"library not found (needed by {scan.path})"))
            continue
        try:
            info = os.stat(found)
        except OSError:
            continue
        identity = (info.st_dev, info.st_ino)
        if identity not in seen:
            targets.append(Target(found, identity=identity))
    return targets
