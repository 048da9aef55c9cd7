"""The content-addressed cache (cache.py): warm rescans, and never a stale answer."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from cpuguard.scan import scan_paths
from cpuguard.scan.cache import ScanCache, default_cache_dir
from tests.scan.conftest import Built


def strip_cache_flag(report_files: tuple) -> list:  # type: ignore[type-arg]
    return [replace(f, from_cache=False) for f in report_files]


def test_a_warm_rescan_gives_the_same_answer_from_the_cache(corpus: dict[str, Built], scan_cache: Path) -> None:
    paths = [corpus[n].path for n in ("kernels-haswell", "supports", "clones-static-stripped")]
    cold = scan_paths(paths, cache_dir=scan_cache)
    warm = scan_paths(paths, cache_dir=scan_cache)
    assert not any(f.from_cache for f in cold.files)
    assert all(f.from_cache for f in warm.files)
    assert strip_cache_flag(warm.files) == strip_cache_flag(cold.files)
    assert warm.totals == cold.totals


def test_the_cache_is_keyed_by_content_not_by_path(corpus: dict[str, Built], tmp_path: Path, scan_cache: Path) -> None:
    first = tmp_path / "first"
    first.write_bytes(corpus["kernels-haswell"].path.read_bytes())
    scan_paths([first], cache_dir=scan_cache)
    second = tmp_path / "second"
    second.write_bytes(first.read_bytes())
    scan = scan_paths([second], cache_dir=scan_cache).files[0]
    assert scan.from_cache and scan.path == str(second)
    first.write_bytes(corpus["kernels-x86-64"].path.read_bytes())  # new content, same path
    rescanned = scan_paths([first], cache_dir=scan_cache).files[0]
    assert not rescanned.from_cache and "avx2" not in rescanned.required_features


def test_touching_a_file_costs_a_hash_but_not_a_rescan(
    corpus: dict[str, Built], tmp_path: Path, scan_cache: Path
) -> None:
    path = tmp_path / "prog"
    path.write_bytes(corpus["kernels-haswell"].path.read_bytes())
    scan_paths([path], cache_dir=scan_cache)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert scan_paths([path], cache_dir=scan_cache).files[0].from_cache


def test_corrupt_or_foreign_entries_are_misses(corpus: dict[str, Built], scan_cache: Path) -> None:
    path = corpus["kernels-haswell"].path
    scan = scan_paths([path], cache_dir=scan_cache).files[0]
    assert scan.sha256 is not None
    cache = ScanCache(scan_cache)
    entries = list(cache.directory.glob(f"??/{scan.sha256}.json"))
    assert len(entries) == 1
    entries[0].write_text("{not json")
    assert cache.get(scan.sha256, str(path)) is None
    entries[0].write_text(json.dumps({"path": "x", "sha256": "0" * 64, "required": []}))
    assert cache.get(scan.sha256, str(path)) is None  # an entry for other content
    for stamp in cache.directory.glob("stat/??/*.json"):
        stamp.unlink()
    again = scan_paths([path], cache_dir=scan_cache).files[0]
    assert not again.from_cache and again.required_features == scan.required_features


def test_an_unwritable_cache_does_not_stop_a_scan(corpus: dict[str, Built], tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    report = scan_paths([corpus["kernels-x86-64"].path], cache_dir=blocker / "cache")
    assert report.scanned


def test_default_cache_location_follows_xdg() -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/cpuguard/scan")
    assert default_cache_dir({"HOME": "/home/u"}) == Path("/home/u/.cache/cpuguard/scan")
