"""A content-addressed cache of file scans.

The key is the SHA-256 of the file's bytes (plus, for the few files judged
by their name, the name pattern they match), under a directory named for
everything else a scan depends on (the scanner's code, the iced-x86
version, the knowledge data files), so that a changed rule never serves
stale results.
Entries are small JSON files written atomically; an unreadable or corrupt
entry is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from cpuguard.scan.records import FileScan
from cpuguard.scan.serialize import file_from_dict, file_to_dict

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
KNOWLEDGE_FILES = (
    "scan_instructions.yaml",
    "scan_dispatch.yaml",
    "feature_names.yaml",
    "levels.yaml",
)


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME/cpuguard/scan``, else ``~/.cache/cpuguard/scan``."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME", "~"), ".cache")
    return Path(os.path.expanduser(base)) / "cpuguard" / "scan"


def _iced_version() -> str:
    """iced-x86's installed version, from its dist-info directory name.

    Cheaper than importlib.metadata (which scans every distribution), and
    importing iced itself is not needed for a warm rescan.
    """
    spec = importlib.util.find_spec("iced_x86")
    if spec is None or spec.origin is None:
        return "absent"
    site = Path(spec.origin).resolve().parent.parent
    found = sorted(p.name for p in site.glob("iced_x86-*.dist-info"))
    return found[-1] if found else f"unknown:{spec.origin}"


@cache
def fingerprint() -> str:
    """What besides the file's bytes a scan result depends on."""
    from cpuguard.scan.records import SCANNER_VERSION

    digest = hashlib.sha256(f"{SCANNER_VERSION}\0{_iced_version()}\0".encode())
    # The scanner's own code: an edited rule must not be served stale answers either.
    for source in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(source.read_bytes())
    for name in KNOWLEDGE_FILES:
        try:
            digest.update((DATA_DIR / name).read_bytes())
        except OSError:
            digest.update(f"missing {name}".encode())
    return digest.hexdigest()[:16]


def _cpu_map_signature() -> str:
    """Changes when libvirt's cpu_map (or cpuguard's bundled copy of it) does."""
    from cpuguard.cpumap import BUNDLED_SNAPSHOT, SYSTEM_CPU_MAP

    parts = []
    for path in (SYSTEM_CPU_MAP / "index.xml", BUNDLED_SNAPSHOT):
        try:
            info = path.stat()
            parts.append(f"{path}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}:absent")
    return "|".join(parts)


class ScanCache:
    """Scan results by content hash, plus two shortcuts for warm rescans.

    * ``known_digest``: the hash of a file whose (device, inode, size,
      mtime, ctime) are unchanged since it was last hashed -- the way git's
      index avoids rehashing; ctime cannot be set back by a user.
    * ``suggestions``: the CPU models satisfying a feature set, which would
      otherwise need libvirt's cpu_map and archspec loaded on every run.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory / fingerprint()

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _write_json(self, path: Path, data: Any) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except OSError:
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, sort_keys=True)
            os.replace(temp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)

    @staticmethod
    def _stat_key(info: os.stat_result) -> tuple[str, list[int]]:
        name = hashlib.sha256(f"{info.st_dev}:{info.st_ino}".encode()).hexdigest()
        return name, [info.st_size, info.st_mtime_ns, info.st_ctime_ns]

    def known_digest(self, info: os.stat_result) -> str | None:
        name, stamp = self._stat_key(info)
        raw = self._read_json(self.directory / "stat" / name[:2] / f"{name}.json")
        if isinstance(raw, dict) and raw.get("stamp") == stamp and isinstance(raw.get("sha256"), str):
            return str(raw["sha256"])
        return None

    def remember_digest(self, info: os.stat_result, sha256: str) -> None:
        name, stamp = self._stat_key(info)
        self._write_json(self.directory / "stat" / name[:2] / f"{name}.json", {"stamp": stamp, "sha256": sha256})

    def suggestions(
        self,
        needed: frozenset[str],
        compute: Callable[[frozenset[str]], tuple[tuple[str, ...], tuple[str, ...]]],
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        key = hashlib.sha256(("\0".join(sorted(needed)) + "\0" + _cpu_map_signature()).encode()).hexdigest()
        path = self.directory / "cpus" / f"{key}.json"
        raw = self._read_json(path)
        if isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, list) for x in raw):
            return tuple(str(m) for m in raw[0]), tuple(str(u) for u in raw[1])
        result = compute(needed)
        self._write_json(path, [list(result[0]), list(result[1])])
        return result

    def _entry(self, sha256: str, name_key: str) -> Path:
        # A file without DT_SONAME is judged partly by its file name (the
        # zstd program), so the same bytes under another name may get
        # another answer: the name-derived input is part of the key.
        suffix = "-" + hashlib.sha256(name_key.encode()).hexdigest()[:16] if name_key else ""
        return self.directory / sha256[:2] / f"{sha256}{suffix}.json"

    def get(self, sha256: str, path: str, name_key: str = "") -> FileScan | None:
        """The cached scan of content ``sha256`` for a file whose name matched ``name_key``."""
        raw = self._read_json(self._entry(sha256, name_key))
        try:
            scan = file_from_dict(raw)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if scan.sha256 != sha256 or not scan.scanned:
            return None
        return replace(scan, path=path, from_cache=True)

    def put(self, scan: FileScan, name_key: str = "") -> None:
        """Store ``scan``; a cache that cannot be written is silently skipped."""
        if scan.sha256 is None or not scan.scanned:
            return
        self._write_json(self._entry(scan.sha256, name_key), file_to_dict(replace(scan, from_cache=False)))
