"""A content-addressed cache of file scans.

The key is the SHA-256 of the file's bytes, under a directory named for
everything else a scan depends on (scanner version, iced-x86 version, the
knowledge data files), so that a changed rule never serves stale results.
Entries are small JSON files written atomically; an unreadable or corrupt
entry is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path

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


@cache
def fingerprint() -> str:
    """What besides the file's bytes a scan result depends on."""
    from cpuguard.scan.analyze import SCANNER_VERSION
    from cpuguard.scan.decode import iced_version

    digest = hashlib.sha256(f"{SCANNER_VERSION}\0{iced_version()}\0".encode())
    for name in KNOWLEDGE_FILES:
        try:
            digest.update((DATA_DIR / name).read_bytes())
        except OSError:
            digest.update(f"missing {name}".encode())
    return digest.hexdigest()[:16]


class ScanCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory / fingerprint()

    def _entry(self, sha256: str) -> Path:
        return self.directory / sha256[:2] / f"{sha256}.json"

    def get(self, sha256: str, path: str) -> FileScan | None:
        try:
            raw = json.loads(self._entry(sha256).read_text(encoding="utf-8"))
            scan = file_from_dict(raw)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if scan.sha256 != sha256 or not scan.scanned:
            return None
        return replace(scan, path=path, from_cache=True)

    def put(self, scan: FileScan) -> None:
        """Store ``scan``; a cache that cannot be written is silently skipped."""
        if scan.sha256 is None or not scan.scanned:
            return
        entry = self._entry(scan.sha256)
        data = json.dumps(file_to_dict(replace(scan, from_cache=False)), sort_keys=True)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        except OSError:
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
            os.replace(temp, entry)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)
