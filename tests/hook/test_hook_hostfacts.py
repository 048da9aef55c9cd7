"""This host's facts in the hook: snapshot, stale snapshot, /proc/cpuinfo fallback."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hook_helpers import DOMAINS, HookSite

from cpuguard.hook.context import build_context
from cpuguard.hook.hostfacts import boot_time, local_host


def proc_stat(tmp_path: Path, btime: int) -> Path:
    path = tmp_path / "stat"
    path.write_text(f"cpu  1 2 3 4\nintr 5\nctxt 6\nbtime {btime}\nprocesses 7\n")
    return path


def test_boot_time_from_proc_stat(tmp_path: Path) -> None:
    assert boot_time(proc_stat(tmp_path, 1700000000)) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert boot_time(tmp_path / "missing") is None
    assert isinstance(boot_time(), datetime)  # this machine's /proc/stat


def test_snapshot_older_than_the_last_boot_is_noticed(site: HookSite, tmp_path: Path) -> None:
    data = json.loads(site.snapshot.read_text())
    data["captured_at"] = "2020-01-01T00:00:00+00:00"
    site.snapshot.write_text(json.dumps(data))
    local = local_host(build_context(site.config), nodename="n", proc_stat=proc_stat(tmp_path, 1700000000))
    assert local.stale
    assert local.warnings == (
        f"host snapshot {site.snapshot} predates the last boot (2020-01-01 00:00 < 2023-11-14 22:13 UTC): "
        f"refresh it with 'cpuguard host snapshot -o {site.snapshot}'",
    )
    fresh = local_host(build_context(site.config), nodename="n", proc_stat=proc_stat(tmp_path, 1500000000))
    assert not fresh.stale and fresh.warnings == ()


def test_stale_snapshot_is_in_the_message_and_the_audit_log(site: HookSite) -> None:
    data = json.loads(site.snapshot.read_text())
    data["captured_at"] = "2000-01-01T00:00:00+00:00"  # before any boot of this machine
    site.snapshot.write_text(json.dumps(data))
    run = site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert run.exit_code == 1
    assert f"; host snapshot {site.snapshot} predates the last boot (2000-01-01 00:00 <" in run.stderr
    assert len(run.stderr.splitlines()) == 1
    (record,) = site.records()
    assert record["snapshot"]["stale"] is True
    assert record["warnings"][0].startswith(f"host snapshot {site.snapshot} predates the last boot")


def test_snapshot_without_capture_time_is_dated_by_its_file(site: HookSite, tmp_path: Path) -> None:
    data = json.loads(site.snapshot.read_text())
    data["captured_at"] = None
    site.snapshot.write_text(json.dumps(data))
    future_boot = int(datetime.now(UTC).timestamp()) + 3600
    local = local_host(build_context(site.config), nodename="n", proc_stat=proc_stat(tmp_path, future_boot))
    assert local.stale


def test_missing_snapshot_falls_back_to_proc_cpuinfo_with_a_warning(site: HookSite) -> None:
    site.snapshot.unlink()
    run = site.hook("web01", "prepare", (DOMAINS / "web01.xml").read_bytes())
    (record,) = site.records()
    assert record["snapshot"] == {"source": "cpuinfo:/proc/cpuinfo"}
    assert record["warnings"][0] == (
        f"no host snapshot at {site.snapshot}; used /proc/cpuinfo, the kernel's view, not what KVM offers "
        f"guests: refresh it with 'cpuguard host snapshot -o {site.snapshot}'"
    )
    assert record["warnings"][0] in run.stderr


def test_no_snapshot_and_no_cpuinfo_is_an_error(site: HookSite, tmp_path: Path) -> None:
    site.snapshot.unlink()
    with pytest.raises(Exception, match=r"no host snapshot, and .*no such file"):
        local_host(build_context(site.config), nodename="n", cpuinfo=tmp_path / "cpuinfo")
