"""``cpuguard hook ...`` and ``cpuguard audit show`` as a user runs them."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hook_helpers import DOMAINS, HookSite, run_cpuguard, run_shim

from cpuguard.errors import BadInput
from cpuguard.hook import shim
from cpuguard.hook.cli import parse_since
from cpuguard.hook.codetrust import code_problems


def test_hook_run_decides_and_keeps_stdout_empty(site: HookSite) -> None:
    done = run_cpuguard(
        "hook", "run", "--config", str(site.config), "--cache-dir", str(site.cache_dir), "db01", "migrate", "begin",
        stdin=(DOMAINS / "db01.xml").read_text(),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("cpuguard: BLOCK db01 on old-node (live): missing abm, avx")
    assert site.records()[0]["vm"] == "db01"


def test_hook_install_status_uninstall(site: HookSite, tmp_path: Path) -> None:
    hooks = tmp_path / "qemu.d"
    args = ["--hooks-dir", str(hooks)]
    done = run_cpuguard("hook", "install", *args, "--config", str(site.config), "--cache-dir", str(site.cache_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"installed {hooks / 'cpuguard'}\n"
        "libvirt finds new hooks only when it starts or reloads: run 'systemctl reload virtqemud' (or libvirtd), "
        "or install again with --reload\n"
    )
    status = run_cpuguard("hook", "status", *args)
    assert status.returncode == 1  # not live yet
    lines = status.stdout.splitlines()
    # a checkout below /tmp (some CI machines) is code others could change: status says so
    problems = code_problems(os.path.abspath(sys.executable), shim.python_path())
    interpreter = "FAIL" if any(p.startswith("interpreter ") for p in problems) else "ok  "
    path = "FAIL" if any(p.startswith("python_path ") for p in problems) else "ok  "
    assert [line[:17] for line in lines] == [
        "ok    hook       ",
        f"{interpreter}  interpreter",
        f"{path}  python_path",
        "ok    config     ",
        "ok    snapshot   ",
        "FAIL  live       ",
    ]
    as_json = json.loads(run_cpuguard("hook", "status", *args, "--format", "json").stdout)
    assert [c["check"] for c in as_json] == ["hook", "interpreter", "python_path", "config", "snapshot", "live"]
    assert run_cpuguard("hook", "uninstall", *args).stdout.startswith(f"removed {hooks / 'cpuguard'}")


def test_hook_install_refuses_a_foreign_hook_in_one_line(site: HookSite, tmp_path: Path) -> None:
    hooks = tmp_path / "qemu.d"
    hooks.mkdir()
    (hooks / "cpuguard").write_text("#!/bin/sh\nexit 0\n")
    done = run_cpuguard("hook", "install", "--hooks-dir", str(hooks), "--config", str(site.config))
    assert done.returncode == 2
    assert done.stderr == (
        f"cpuguard: error: {hooks / 'cpuguard'}: exists and is not cpuguard's hook; not touching it "
        "(move it, or install elsewhere)\n"
    )


def test_audit_show_filters(site: HookSite) -> None:
    site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    site.hook("web01", "prepare", (DOMAINS / "web01.xml").read_bytes())
    site.hook("db01", "restore", b"broken")
    log = ["--log", str(site.audit_log)]
    everything = run_cpuguard("audit", "show", *log).stdout.splitlines()
    assert [line.split("  ")[2:5] for line in everything] == [
        ["db01", "migrate", "BLOCK"],
        ["web01", "start", "WARN"],
        ["db01", "restore", "ERROR->BLOCK"],
    ]
    only_db01 = run_cpuguard("audit", "show", *log, "--vm", "db01", "--verdict", "error").stdout.splitlines()
    assert len(only_db01) == 1 and "restore" in only_db01[0]
    last = run_cpuguard("audit", "show", *log, "--last", "1", "--format", "json").stdout
    assert json.loads(last)["operation"] == "restore"
    assert run_cpuguard("audit", "show", *log, "--since", "1h").stdout.count("\n") == 3
    from_config = run_cpuguard("audit", "show", "--config", str(site.config), "--operation", "start")
    assert from_config.stdout.count("\n") == 1


def test_audit_show_without_a_log(tmp_path: Path) -> None:
    done = run_cpuguard("audit", "show", "--log", str(tmp_path / "none.jsonl"))
    assert done.returncode == 2
    assert done.stderr == (
        f"cpuguard: error: {tmp_path / 'none.jsonl'}: no audit log yet (the hook writes it at its first decision)\n"
    )


def test_parse_since() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2026, 5, 1, 11, 30, tzinfo=UTC)
    assert parse_since("2d", now) == datetime(2026, 4, 29, 12, tzinfo=UTC)
    assert parse_since("2026-04-01", now) == datetime(2026, 4, 1, tzinfo=UTC)
    with pytest.raises(BadInput, match="neither an ISO time nor an age"):
        parse_since("yesterday", now)


def test_hook_install_makes_relative_paths_absolute(site: HookSite, tmp_path: Path) -> None:
    """libvirt runs the hook from /: a relative --config would name another file there."""
    work = tmp_path / "work"
    (work / "h" / "etc").mkdir(parents=True)
    site.config.rename(work / "h" / "etc" / "config.yaml")
    site.policies.rename(work / "h" / "etc" / "policies")
    site.snapshot.rename(work / "h" / "etc" / "host.json")
    args = ["--hooks-dir", "h/qemu.d", "--config", "h/etc/config.yaml", "--cache-dir", "h/cache"]
    done = run_cpuguard("hook", "install", *args, cwd=work)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"installed {work / 'h' / 'qemu.d' / 'cpuguard'}\n")
    shim_file = work / "h" / "qemu.d" / "cpuguard"
    settings = shim.read_settings(shim_file.read_text())
    assert settings["config"] == str(work / "h" / "etc" / "config.yaml")
    assert settings["cache_dir"] == str(work / "h" / "cache")
    assert settings["audit_log"] == str(work / "h" / "etc" / "audit.jsonl")
    for name in ("python", "config", "cache_dir", "audit_log"):
        assert settings[name].startswith("/"), name
    assert all(entry.startswith("/") for entry in settings["python_path"].split(":"))
    run = run_shim(shim_file, "db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert run.stderr.startswith("cpuguard: BLOCK db01 on old-node (live)")
    assert (work / "h" / "etc" / "audit.jsonl").exists()


def test_audit_show_skips_what_is_not_a_record_and_says_so(site: HookSite) -> None:
    site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    with site.audit_log.open("a") as log:
        log.write('{"vm": "web01", "verdict": "block"}\n')
    done = run_cpuguard("audit", "show", "--log", str(site.audit_log))
    assert done.returncode == 0
    (line,) = done.stdout.splitlines()
    assert "None" not in line and "db01  migrate  BLOCK" in line
    assert done.stderr == (
        f"cpuguard: {site.audit_log}:2: skipped, not an audit record: no time, host, operation, decision\n"
    )
    as_json = run_cpuguard("audit", "show", "--log", str(site.audit_log), "--format", "json").stdout
    assert [json.loads(line)["vm"] for line in as_json.splitlines()] == ["db01"]


def test_hook_run_with_a_broken_config_logs_where_the_installed_hook_does(site: HookSite, tmp_path: Path) -> None:
    hooks = tmp_path / "qemu.d"
    xml = (DOMAINS / "db01.xml").read_text()
    args = ["--config", str(site.config), "--cache-dir", str(site.cache_dir), "--hooks-dir", str(hooks)]
    installed = run_cpuguard("hook", "install", *args[:4], "--hooks-dir", str(hooks))
    assert installed.returncode == 0, installed.stderr
    site.config.write_text("mode: [\n")

    done = run_cpuguard("hook", "run", *args, "db01", "migrate", "begin", stdin=xml)
    assert done.returncode == 1
    assert done.stderr.startswith("cpuguard: ERROR db01 on ")
    (record,) = site.records()
    assert (record["verdict"], record["decision"]) == ("error", "block")

    # no hook installed for this config: the log is unknown, and nothing lands in the system's log
    elsewhere = run_cpuguard(
        "hook", "run", *args[:4], "--hooks-dir", str(tmp_path / "none"), "db01", "migrate", "begin", stdin=xml
    )
    assert elsewhere.returncode == 1
    assert elsewhere.stderr.rstrip("\n").endswith(
        "; audit log (unknown) not written: the configuration cannot be read and no --audit-log names the log"
    )
    assert len(site.records()) == 1
    chosen = tmp_path / "chosen.jsonl"
    given = run_cpuguard("hook", "run", *args[:4], "--audit-log", str(chosen), "db01", "prepare", "begin", stdin=xml)
    assert given.returncode == 0
    assert json.loads(chosen.read_text())["decision"] == "allow"
