"""The audit log: whole lines under concurrency, read back and filtered."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from hook_helpers import DOMAINS, HookSite

from cpuguard.hook import audit
from cpuguard.hook.decision import Event, base_record
from cpuguard.hook.install import hook_path, install
from cpuguard.hosts.synthetic import model_host
from cpuguard.knowledge import load_knowledge


def test_records_have_every_documented_key(site: HookSite) -> None:
    site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    site.hook("db01", "migrate", b"broken")
    for record in site.records():
        assert sorted(record) == sorted(audit.KEYS)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert sorted(base_record(Event("v", "start", "prepare begin"), "h", now, None)) == sorted(audit.KEYS)


def test_twenty_parallel_hooks_leave_twenty_intact_lines(site: HookSite, tmp_path: Path) -> None:
    """libvirt runs the hooks of parallel migrations in parallel: the real shim, 20 at once."""
    hooks = tmp_path / "qemu.d"
    install(hooks, site.config, site.cache_dir, snapshot=lambda n: model_host("Westmere", load_knowledge(), "x"))
    xml = (DOMAINS / "db01.xml").read_bytes()
    env = {"LC_ALL": "C", "PATH": "/usr/bin:/bin", "HOME": "/root"}
    procs = [
        subprocess.Popen(
            [str(hook_path(hooks)), f"db01-{i:02d}", "migrate", "begin", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for i in range(20)
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(xml.replace(b"<name>db01</name>", b"<name>x</name>"))
        proc.stdin.close()
    results = [(proc.wait(timeout=120), proc.stdout.read() if proc.stdout else b"") for proc in procs]
    assert results == [(1, b"")] * 20
    lines = site.audit_log.read_text().splitlines()
    assert len(lines) == 20
    records = [json.loads(line) for line in lines]
    assert sorted(r["vm"] for r in records) == [f"db01-{i:02d}" for i in range(20)]
    assert {(r["verdict"], r["decision"]) for r in records} == {("block", "block")}
    assert len({r["pid"] for r in records}) == 20


def _append_many(path: str, writer: int, count: int) -> None:
    for n in range(count):
        audit.append(Path(path), {"writer": writer, "n": n, "padding": "x" * (5000 + writer * 300)})


def test_concurrent_large_appends_never_interleave(tmp_path: Path) -> None:
    """Lines larger than a pipe buffer, many writers: every line parses, none is lost."""
    log = tmp_path / "log" / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_append_many, args=(str(log), w, 50)) for w in range(8)]
    for proc in writers:
        proc.start()
    for proc in writers:
        proc.join(60)
        assert proc.exitcode == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 400
    assert sorted((r["writer"], r["n"]) for r in records) == [(w, n) for w in range(8) for n in range(50)]
    assert log.stat().st_mode & 0o777 == 0o640


def record(vm: str, **changes: object) -> str:
    fields = {"time": "2026-05-01T10:00:00.000+00:00", "host": "n1", "vm": vm, "operation": "start"}
    fields.update(verdict="allow", decision="allow")
    return json.dumps({**fields, **changes})


def test_read_reports_damaged_lines(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    lines = [
        record("a"),
        "not json",
        "",
        "[1, 2]",
        '{"vm": "c"}',
        record("d", verdict=None),
        record("e", time="yesterday"),
        record("b"),
    ]
    log.write_text("\n".join(lines) + "\n")
    items = list(audit.read(log))
    assert [i["vm"] for i in items if isinstance(i, dict)] == ["a", "b"]
    bad = [i for i in items if isinstance(i, audit.BadLine)]
    assert [(b.number, b.problem) for b in bad][1:] == [
        (4, "not a JSON object"),
        (5, "not an audit record: no time, host, operation, verdict, decision"),
        (6, "not an audit record: no verdict"),
        (7, "not an audit record: time 'yesterday' is not an ISO 8601 time"),
    ]
    assert bad[0].number == 2 and bad[0].problem.startswith("not JSON")


def test_filter() -> None:
    record = {
        "vm": "db01",
        "host": "n1",
        "operation": "migrate",
        "verdict": "block",
        "time": "2026-05-01T10:00:00+00:00",
    }
    assert audit.Filter().matches(record)
    assert audit.Filter(vms=frozenset({"db01", "x"})).matches(record)
    assert not audit.Filter(vms=frozenset({"x"})).matches(record)
    assert not audit.Filter(operations=frozenset({"start"})).matches(record)
    assert audit.Filter(verdicts=frozenset({"block"}), hosts=frozenset({"n1"})).matches(record)
    assert audit.Filter(since=datetime(2026, 5, 1, 9, tzinfo=UTC)).matches(record)
    assert not audit.Filter(since=datetime(2026, 5, 1, 11, tzinfo=UTC)).matches(record)
    assert not audit.Filter(since=datetime(2026, 5, 1, 9, tzinfo=UTC)).matches({**record, "time": "garbage"})


def test_summary_lines(site: HookSite) -> None:
    site.hook("db01", "prepare", (DOMAINS / "db01.xml").read_bytes())
    site.hook("db01", "migrate", b"broken")
    block, error = site.records()
    assert audit.summary(block) == (
        f"{block['time']}  old-node  db01  start  BLOCK  missing abm, avx, avx2, bmi1, bmi2, erms, f16c, fma, "
        "fsgsbase, invpcid, movbe, pcid, pclmulqdq, rdtscp, smep, spec_ctrl, xsave"
    )
    assert audit.summary(error) == (
        f"{error['time']}  old-node  db01  migrate  ERROR->BLOCK  libvirt:db01: malformed XML: "
        "syntax error: line 1, column 0"
    )


def test_a_record_the_disk_cannot_hold_is_cut_off_whole(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse to grow the file part-way through a write, the way a
    full disk does (write returns short, then fails): only whole lines may stay."""
    log = tmp_path / "audit.jsonl"
    audit.append(log, {"vm": "first"})
    size = log.stat().st_size
    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from cpuguard.hook import audit\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 100}, {size + 100}))\n"
        "try:\n"
        f"    audit.append(Path({str(log)!r}), {{'vm': 'x' * 500}})\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "27", done.stderr  # EFBIG
    assert log.read_text() == '{"vm":"first"}\n'
    audit.append(log, {"vm": "next"})
    assert [json.loads(line)["vm"] for line in log.read_text().splitlines()] == ["first", "next"]


def test_the_hooks_json_is_the_json_modules(site: HookSite) -> None:
    """cpuguard.hook.journal writes records without the json package, byte for byte as audit.encode does."""
    from cpuguard.hook.journal import json_line

    site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    site.hook("db01", "migrate", b"broken")
    tricky = 'a"b\\c\n\r\t\b\f\x00\x1f\x7f é \u2028 😀'
    records = [*site.records(), {"x": [tricky, 1, 2.5, -0.0, 1e16, True, False, None, {"b": {}, "a": []}]}]
    for record in records:
        assert json_line(record) == audit.encode(record)
