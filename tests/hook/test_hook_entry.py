"""The hook entry: arguments, on_error, the deadline, and nothing on stdout."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from hook_helpers import DOMAINS, HookSite, model_xml

from cpuguard.hook.entry import Options, UsageError, main, parse_args


def test_parse_args() -> None:
    options, words = parse_args(
        ["--config", "/c.yaml", "--no-cache", "--deadline", "2.5", "--on-error-exit", "1", "--", "vm", "migrate"]
    )
    assert options == Options(config="/c.yaml", cache_dir=None, deadline=2.5, on_error_exit=1)
    assert words == ["vm", "migrate"]
    assert parse_args(["vm", "prepare", "begin", "-"]) == (Options(), ["vm", "prepare", "begin", "-"])


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--config"], "--config needs a value"),
        (["--on-error-exit", "2"], "--on-error-exit must be 0 or 1, not '2'"),
        (["--deadline", "soon"], "--deadline must be a number of seconds, not 'soon'"),
        (["--deadline", "0"], "--deadline must be positive"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ],
)
def test_bad_arguments(argv: list[str], problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        parse_args(argv)


def test_usage_error_exits_2_with_one_message() -> None:
    err = io.StringIO()
    assert main(["vm"], stdin=io.BytesIO(), stderr=err) == 2
    assert err.getvalue().splitlines()[0] == "cpuguard hook: expected VM OPERATION SUB-OPERATION"


def test_unguarded_calls_exit_0_without_reading_stdin_or_logging(site: HookSite) -> None:
    class Unreadable(io.BytesIO):
        def read(self, *args: object) -> bytes:
            raise AssertionError("stdin read for an unguarded call")

    for operation, sub in [("start", "begin"), ("started", "begin"), ("release", "end"), ("migrate", "end")]:
        err = io.StringIO()
        argv = [*site.options(), "--", "vm1", operation, sub, "-"]
        assert main(argv, stdin=Unreadable(), stderr=err) == 0
        assert err.getvalue() == ""
    assert site.records() == []


def test_broken_config_blocks_a_migration_and_allows_a_start(site: HookSite) -> None:
    site.config.write_text("mode: [\n")
    xml = (DOMAINS / "db01.xml").read_bytes()
    migrate = site.hook("db01", "migrate", xml)
    start = site.hook("db01", "prepare", xml)
    problem = f"{site.config}: invalid YAML: expected the node content, but found '<stream end>' (line 2, column 1)"
    assert migrate.exit_code == 1
    assert migrate.stderr == (
        f"cpuguard: ERROR db01 on {os.uname().nodename} (live): could not decide: {problem}; on_error for migrate "
        "is block: refusing the live migration here (the VM keeps running on its source host)\n"
    )
    assert start.exit_code == 0
    assert start.stderr.endswith("on_error for start is allow: allowing the start here unchecked\n")
    records = site.records()
    assert [(r["operation"], r["verdict"], r["decision"]) for r in records] == [
        ("migrate", "error", "block"),
        ("start", "error", "allow"),
    ]
    assert records[0]["error"] == problem


def test_unreadable_config_follows_the_shims_on_error_exit(site: HookSite) -> None:
    """The shim passes the on_error install found: an unreadable config cannot say otherwise."""
    site.config.write_text("{")
    xml = (DOMAINS / "db01.xml").read_bytes()
    assert site.hook("db01", "migrate", xml, "--on-error-exit", "0").exit_code == 0
    assert site.hook("db01", "prepare", xml, "--on-error-exit", "1").exit_code == 1
    assert [r["decision"] for r in site.records()] == ["allow", "block"]


def test_readable_config_on_error_wins(site: HookSite) -> None:
    site.configure(on_error={"migrate": "allow", "start": "block"})
    broken = b"<domain><name>db01</name>"
    migrate = site.hook("db01", "migrate", broken)
    start = site.hook("db01", "prepare", broken)
    assert (migrate.exit_code, start.exit_code) == (0, 1)
    assert "could not decide: libvirt:db01: malformed XML" in migrate.stderr
    assert start.stderr.endswith("on_error for start is block: refusing the start here (the VM stays shut off)\n")


def test_broken_policy_is_an_error_that_follows_the_configs_on_error(site: HookSite) -> None:
    site.configure(on_error={"migrate": "allow"}, host_name="node7", audit_log="elsewhere.jsonl")
    policy = site.policies / "vms" / "web01.yaml"
    policy.write_text("vm: web01\nrequires: {level: x86-64-v9}\n")
    run = site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert run.exit_code == 0
    assert run.stderr.startswith(
        f"cpuguard: ERROR db01 on node7 (live): could not decide: {policy}: unknown x86-64 level 'x86-64-v9'"
    )
    assert not site.audit_log.exists()
    (line,) = (site.root / "elsewhere.jsonl").read_text().splitlines()
    assert '"decision":"allow"' in line


def test_deadline_turns_a_hung_read_into_on_error(site: HookSite) -> None:
    site.snapshot.unlink()
    os.mkfifo(site.snapshot)
    writer = os.open(site.snapshot, os.O_RDWR | os.O_NONBLOCK)  # holds the pipe open and never writes
    try:
        run = site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes(), "--deadline", "0.3")
    finally:
        os.close(writer)
    assert run.exit_code == 1
    assert "could not decide: no decision within 0.3 s (--deadline)" in run.stderr
    assert site.records()[0]["verdict"] == "error"


def test_audit_failure_keeps_the_decision_and_says_so(site: HookSite) -> None:
    site.audit_log.mkdir()  # cannot be opened for appending
    run = site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert run.exit_code == 1
    assert len(run.stderr.splitlines()) == 1
    assert run.stderr.rstrip().endswith(f"; audit log {site.audit_log} not written: Is a directory")


def test_nothing_on_stdout_ever(site: HookSite) -> None:
    """libvirt takes a migrate/restore hook's stdout as a replacement domain XML."""
    code = "import sys; from cpuguard.hook.entry import main; sys.exit(main())"
    cases = [
        ("db01", "migrate", (DOMAINS / "db01.xml").read_bytes()),
        ("web01", "restore", model_xml("web01", "Westmere")),
        ("db01", "restore", b"not xml"),
        ("db01", "prepare", (DOMAINS / "db01.xml").read_bytes()),
    ]
    for vm, operation, xml in cases:
        done = subprocess.run(
            [sys.executable, "-c", code, *site.options(), "--", vm, operation, "begin", "-"],
            input=xml,
            capture_output=True,
            timeout=60,
        )
        assert done.stdout == b"", (vm, operation)
        assert len(done.stderr.decode().splitlines()) <= 1, done.stderr


def test_inputs_other_users_could_change_are_refused(site: HookSite) -> None:
    """Here every input lies below /tmp, which anyone may write (cpuguard.trust has the details)."""
    site.configure(check_permissions=True)
    run = site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert run.exit_code == 1
    problem = "not trusted: its directory /tmp is writable by group and others (mode 1777)"
    assert f"could not decide: {site.config}: {problem}" in run.stderr
    assert site.records()[0]["verdict"] == "error"
    site.configure(check_permissions=False)
    assert "BLOCK db01" in site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes()).stderr


def test_a_shim_installed_by_cpuguard_0_1_still_decides(site: HookSite) -> None:
    """Such shims run cpuguard.hook.client with --socket first: it is dropped, the entry decides."""
    argv = ["--socket", "/run/cpuguard/hook.sock", *site.options(), "--", "db01", "migrate", "begin", "-"]
    xml = (DOMAINS / "db01.xml").read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from cpuguard.hook.client import main; sys.exit(main())", *argv],
        input=xml,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode().startswith("cpuguard: BLOCK db01 on old-node (live)")
