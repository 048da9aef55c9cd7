"""``scan_paths``: scan files and directories and return a :class:`ScanReport`.

Files are taken in batches: each file is hashed, looked up in the cache,
and otherwise its ELF metadata is read; then the code of the whole batch is
decoded, in a process pool when there is enough of it, and classified.
Memory stays bounded by the batch, whatever the size of the tree. A file
that cannot be scanned becomes a skipped entry with a reason; only the
caller decides whether "nothing scanned" is an error.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from cpuguard.scan import elf
from cpuguard.scan.analyze import Prepared, finish, prepare
from cpuguard.scan.cache import ScanCache, default_cache_dir
from cpuguard.scan.decode import FunctionCode, Span, decode_file_spans
from cpuguard.scan.features import default_feature_table
from cpuguard.scan.knowledge import load_dispatch_knowledge
from cpuguard.scan.records import FileScan, ScanReport
from cpuguard.scan.summary import totals
from cpuguard.scan.walk import Target, expand, library_search_dirs, resolve_library

NOT_ELF = "not an ELF file"
BATCH_BYTES = 64 << 20  # code decoded per batch
CHUNK_BYTES = 512 << 10  # code per pool task
PARALLEL_MIN_BYTES = 2 << 20  # below this, a pool costs more than it saves


class DefaultCache(Enum):
    """Use :func:`default_cache_dir` (the sentinel default of ``cache_dir``)."""

    DEFAULT = "default"


@dataclass(frozen=True)
class Progress:
    files_done: int
    files_total: int  # known so far (grows while directories are walked)
    code_done: int
    code_total: int
    path: str


ProgressCallback = Callable[[Progress], None]


@dataclass
class _Pending:
    index: int
    prepared: Prepared
    identity: tuple[int, int, int]  # (st_ino, st_size, st_mtime_ns) when opened


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class _Scan:
    def __init__(
        self,
        cache: ScanCache | None,
        progress: ProgressCallback | None,
        jobs: int,
    ) -> None:
        self.cache = cache
        self.progress = progress
        self.jobs = jobs
        self.table = default_feature_table()
        self.knowledge = load_dispatch_knowledge()
        self.results: list[FileScan | None] = []
        self.files_done = 0
        self.code_done = 0
        self.code_total = 0
        self.executor: Executor | None = None

    def report(self, path: str) -> None:
        if self.progress is not None:
            self.progress(Progress(self.files_done, len(self.results), self.code_done, self.code_total, path))

    def add(self, scan: FileScan) -> None:
        self.results.append(scan)
        self.files_done += 1
        self.report(scan.path)

    # -- one file ------------------------------------------------------------

    def open(self, target: Target) -> _Pending | None:
        """Hash and prepare one file; records a finished or skipped result itself."""
        path = target.path
        if target.problem is not None:
            self.add(FileScan(path, skipped=target.problem))
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            self.add(FileScan(path, skipped=exc.strerror or str(exc)))
            return None
        try:
            return self._open_fd(path, fd)
        finally:
            os.close(fd)

    def _open_fd(self, path: str, fd: int) -> _Pending | None:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            self.add(FileScan(path, skipped="not a regular file"))
            return None
        size = info.st_size
        if size == 0:
            self.add(FileScan(path, size=0, skipped="empty file"))
            return None
        try:
            elf.sniff(os.pread(fd, 64, 0))
        except elf.NotElf:
            self.add(FileScan(path, size=size, skipped=NOT_ELF))
            return None
        except elf.ElfError as exc:
            self.add(FileScan(path, size=size, skipped=str(exc)))
            return None
        except OSError as exc:
            self.add(FileScan(path, size=size, skipped=exc.strerror or str(exc)))
            return None
        try:
            with os.fdopen(os.dup(fd), "rb") as handle:
                sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            self.add(FileScan(path, size=size, skipped=exc.strerror or str(exc)))
            return None
        cached = self.cache.get(sha256, path) if self.cache else None
        if cached is not None:
            self.add(cached)
            return None
        try:
            prepared = prepare(path, elf.FileSource(fd, size), sha256, self.knowledge, os.path.basename(path))
        except elf.ElfError as exc:
            self.add(FileScan(path, sha256, size, skipped=str(exc)))
            return None
        except OSError as exc:
            self.add(FileScan(path, sha256, size, skipped=exc.strerror or str(exc)))
            return None
        self.results.append(None)
        self.code_total += prepared.code_bytes
        return _Pending(len(self.results) - 1, prepared, _identity(info))

    # -- a batch ---------------------------------------------------------------

    def decode(self, batch: list[_Pending]) -> list[list[FunctionCode]]:
        tasks: list[tuple[int, int, list[Span]]] = []  # (file, first span, spans)
        for number, pending in enumerate(batch):
            spans = pending.prepared.spans
            start = 0
            size = 0
            for i, span in enumerate(spans):
                size += span.size
                if size >= CHUNK_BYTES:
                    tasks.append((number, start, spans[start : i + 1]))
                    start, size = i + 1, 0
            if start < len(spans):
                tasks.append((number, start, spans[start:]))
        results: list[list[FunctionCode]] = [[({}, ())] * len(p.prepared.spans) for p in batch]
        total = sum(p.prepared.code_bytes for p in batch)
        for (number, start, spans), codes in self._run(batch, tasks, total):
            results[number][start : start + len(spans)] = codes
            self.code_done += sum(s.size for s in spans)
            self.report(batch[number].prepared.path)
        return results

    def _run(
        self,
        batch: list[_Pending],
        tasks: list[tuple[int, int, list[Span]]],
        total: int,
    ) -> Iterator[tuple[tuple[int, int, list[Span]], list[FunctionCode]]]:
        if self.jobs > 1 and total >= PARALLEL_MIN_BYTES and len(tasks) > 1:
            if self.executor is None:
                context = multiprocessing.get_context("fork")
                self.executor = ProcessPoolExecutor(self.jobs, mp_context=context)
            futures = {
                self.executor.submit(
                    decode_file_spans,
                    batch[n].prepared.path,
                    spans,
                    batch[n].prepared.immediates,
                ): (n, s, spans)
                for n, s, spans in tasks
            }
            for future in as_completed(futures):
                yield futures[future], future.result()
            return
        for task in tasks:
            number, _, spans = task
            yield task, decode_file_spans(batch[number].prepared.path, spans, batch[number].prepared.immediates)

    def finish(self, batch: list[_Pending]) -> list[FileScan]:
        done: list[FileScan] = []
        for pending, codes in zip(batch, self.decode(batch), strict=True):
            prepared = pending.prepared
            scan = finish(prepared, codes, self.table, self.knowledge)
            try:
                changed = _identity(os.stat(prepared.path)) != pending.identity
            except OSError:
                changed = True
            if changed:
                scan = FileScan(
                    prepared.path, prepared.sha256, prepared.size,
                    skipped="the file changed while it was being scanned",
                )  # fmt: skip
            elif self.cache is not None:
                self.cache.put(scan)
            self.results[pending.index] = scan
            self.files_done += 1
            done.append(scan)
        return done

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


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
    """Scan ELF files and directories; ``follow_needed`` adds their DT_NEEDED libraries."""
    if cache_dir is DefaultCache.DEFAULT:
        cache_dir = default_cache_dir(environ)
    cache = ScanCache(cache_dir) if isinstance(cache_dir, Path) else None
    search = list(library_dirs) if library_dirs is not None else library_search_dirs(environ)
    state = _Scan(cache, progress, jobs if jobs is not None else default_jobs())
    seen: set[tuple[int, int]] = set()
    missing: set[str] = set()
    queue: deque[Target] = deque()
    walker = expand(paths)
    try:
        while True:
            batch: list[_Pending] = []
            size = 0
            while size < BATCH_BYTES:
                target = queue.popleft() if queue else next(walker, None)
                if target is None:
                    break
                if target.identity is not None:
                    if target.identity in seen:
                        continue
                    seen.add(target.identity)
                pending = state.open(target)
                if pending is not None:
                    batch.append(pending)
                    size += pending.prepared.code_bytes
                elif follow_needed and state.results and state.results[-1] is not None:
                    queue.extend(_needed_targets(state.results[-1], search, seen, missing))
            if not batch:
                if queue:
                    continue
                break
            for scan in state.finish(batch):
                if follow_needed:
                    queue.extend(_needed_targets(scan, search, seen, missing))
    finally:
        state.close()
    files = tuple(r for r in state.results if r is not None)
    return ScanReport(files, totals(files), now())


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
