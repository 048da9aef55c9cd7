"""Remembered decisions (cpuguard.hook.memo): the same answer as the full path, and never one that
any change to the inputs, the call or cpuguard could make wrong."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hook_helpers import DOMAINS, HookSite, model_xml, run_shim
from hypothesis import given
from hypothesis import strategies as st

from cpuguard.hook import audit, cache, journal, memo
from cpuguard.hook.context import build_context
from cpuguard.hook.entry import main
from cpuguard.hook.install import hook_path, install
from cpuguard.hosts.synthetic import model_host
from cpuguard.knowledge import load_knowledge

DB01 = (DOMAINS / "db01.xml").read_bytes()


def later() -> datetime:
    """A clock an hour ahead: every input looks old enough to be trusted (cpuguard.hook.cache.RACY_SECONDS)."""
    return datetime.now(UTC) + timedelta(hours=1)


def args(site: HookSite, vm: str = "db01", operation: str = "migrate") -> list[str]:
    return [*site.options(), "--", vm, operation, "begin", "-"]


def decide(site: HookSite, xml: bytes = DB01, vm: str = "db01", operation: str = "migrate", **kw: Any) -> int:
    """The full path, as the client calls it, with a clock that lets it remember."""
    kw.setdefault("now", later)
    return main(args(site, vm, operation), stdin=io.BytesIO(xml), stderr=io.StringIO(), **kw)


def recall(site: HookSite, xml: bytes = DB01, vm: str = "db01", operation: str = "migrate") -> tuple[int | None, str]:
    err = io.StringIO()
    code = memo.answer(args(site, vm, operation), xml, started=0.0, err=err)
    return code, err.getvalue()


def lookup(site: HookSite, xml: bytes = DB01, **kw: Any) -> memo.Remembered | None:
    found = memo.lookup(args(site), xml, **kw)
    return found[1] if found else None


def memo_entries(site: HookSite) -> list[Path]:
    directory = Path(memo.memo_dir(str(site.cache_dir), str(site.config)))
    return sorted(directory.iterdir()) if directory.exists() else []


def test_a_repeated_call_is_answered_as_the_full_path_answered_it(site: HookSite) -> None:
    err = io.StringIO()
    full = main(args(site), stdin=io.BytesIO(DB01), stderr=err, now=later)
    code, message = recall(site)
    assert (code, message) == (full, err.getvalue())
    assert code == 1 and message.startswith("cpuguard: BLOCK db01 on old-node (live): missing abm, avx")
    first, second = site.records()
    assert (first["decided_in"], second["decided_in"]) == ("hook", "memo")
    differ = {key for key in first if first[key] != second[key]}
    assert "decided_in" in differ and differ <= set(journal.PER_CALL)
    # the line is the one json would write for that record
    assert site.audit_log.read_bytes().splitlines(keepends=True)[1] == audit.encode(second)


def test_allowed_and_warned_decisions_are_remembered_too(site: HookSite) -> None:
    web01 = model_xml("web01", "Westmere")
    assert decide(site, web01, "web01") == 0
    assert recall(site, web01, "web01") == (0, "")
    haswell = model_xml("web01", "Haswell")
    assert decide(site, haswell, "web01", "prepare") == 0
    code, message = recall(site, haswell, "web01", "prepare")
    assert code == 0 and message.startswith("cpuguard: WARN web01 on old-node (cold): missing avx, avx2")
    assert [r["decided_in"] for r in site.records()] == ["hook", "memo", "hook", "memo"]


def test_only_the_decisive_parts_of_the_domain_xml_matter(site: HookSite) -> None:
    decide(site)
    elsewhere = DB01.replace(b"<memory unit='MiB'>8192</memory>", b"<memory unit='MiB'>16384</memory>")
    assert recall(site, elsewhere)[0] == 1
    other_cpu = DB01.replace(b"name='f16c'", b"name='avx2'")
    assert recall(site, other_cpu) == (None, "")
    commented = DB01.replace(b"<vcpu>", b"<!-- --><vcpu>")
    assert recall(site, commented) == (None, "")
    assert len(site.records()) == 2  # a miss writes nothing


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: s.configure(mode="warn"), id="config"),
        pytest.param(lambda s: (s.policies / "vms" / "db01.yaml").write_text("vm: db01\n"), id="policy"),
        pytest.param(lambda s: (s.policies / "vms" / "new01.yaml").write_text("vm: new01\n"), id="new-policy"),
        pytest.param(lambda s: (s.policies / "inventory.yaml").write_text("hosts: {}\n"), id="inventory"),
        pytest.param(
            lambda s: (s.policies / "hosts" / "new-node.xml").write_text(
                (s.policies / "hosts" / "new-node.xml").read_text().replace("<vendor>", " <vendor>")
            ),
            id="host-file",
        ),
        pytest.param(lambda s: s.snapshot_from("model:Nehalem", "old-node"), id="snapshot"),
        pytest.param(lambda s: s.snapshot.unlink(), id="snapshot-removed"),
    ],
)
def test_any_change_to_an_input_forgets(site: HookSite, change: Callable[[HookSite], object]) -> None:
    decide(site)
    assert lookup(site) is not None
    change(site)
    assert lookup(site) is None


def test_another_call_or_node_is_another_question(site: HookSite) -> None:
    decide(site)
    assert lookup(site) is not None
    assert memo.lookup(args(site, operation="restore"), DB01) is None
    assert memo.lookup(args(site, vm="db02"), DB01) is None
    assert lookup(site, nodename="elsewhere") is None


def proc_stat(tmp_path: Path, btime: int | None, name: str) -> Path:
    path = tmp_path / name
    path.write_text("cpu  1 2 3\n" + (f"btime {btime}\n" if btime is not None else "") + "processes 9\n")
    return path


#: Boot times relative to the snapshot's capture (now): long before it, and an hour and a day after it.
EARLY, LATE, LATER = "early", "late", "later"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(EARLY, LATE, id="snapshot-becomes-stale"),
        pytest.param(LATE, EARLY, id="snapshot-becomes-fresh"),
        pytest.param(LATE, LATER, id="stale-another-boot"),
        pytest.param(EARLY, None, id="boot-unknown"),
        pytest.param(None, LATE, id="boot-known-again"),
    ],
)
def test_a_reboot_is_answered_from_the_memo_as_the_full_path_would(
    site: HookSite, tmp_path: Path, before: str | None, after: str | None
) -> None:
    """The boot time is not part of the key (a rebooting host starts all its VMs), but the stale-snapshot
    warning and the record's ``stale`` follow the boot exactly as a full decision's do."""
    now = int(datetime.now(UTC).timestamp())
    boots = {EARLY: 1_000_000, LATE: now + 3600, LATER: now + 86400, None: None}
    first, second = proc_stat(tmp_path, boots[before], "before"), proc_stat(tmp_path, boots[after], "after")
    decide(site, proc_stat=first)
    assert len(memo_entries(site)) == 1
    err = io.StringIO()
    code = memo.answer(args(site), DB01, started=0.0, err=err, proc_stat=str(second))
    assert code == 1
    full_err = io.StringIO()
    options = site.options(cache=False)
    full = main([*options, "--", "db01", "migrate", "begin", "-"], stdin=io.BytesIO(DB01), stderr=full_err,
                proc_stat=second)  # fmt: skip
    assert (code, err.getvalue()) == (full, full_err.getvalue())
    _, remembered, decided = site.records()
    assert remembered["decided_in"] == "memo"
    assert {key for key in remembered if remembered[key] != decided[key]} <= set(journal.PER_CALL)
    stale = after in (LATE, LATER)
    assert remembered["snapshot"]["stale"] is stale
    booted = datetime.fromtimestamp(boots[after] or 0, UTC)
    warning = f"host snapshot {site.snapshot} predates the last boot ("
    assert any(w.startswith(warning) for w in remembered["warnings"]) is stale
    assert (f"< {booted:%Y-%m-%d %H:%M} UTC): refresh it" in err.getvalue()) is stale
    assert memo.BOOT_PLACEHOLDER not in err.getvalue() + json.dumps(remembered)


def test_a_remembered_quiet_allow_warns_once_the_snapshot_predates_the_boot(site: HookSite, tmp_path: Path) -> None:
    web01 = model_xml("web01", "Westmere")
    assert decide(site, web01, "web01", proc_stat=proc_stat(tmp_path, 1_000_000, "early")) == 0
    assert recall(site, web01, "web01") == (0, "")
    rebooted = proc_stat(tmp_path, int(datetime.now(UTC).timestamp()) + 60, "late")
    err = io.StringIO()
    assert memo.answer(args(site, "web01"), web01, started=0.0, err=err, proc_stat=str(rebooted)) == 0
    assert err.getvalue().startswith("cpuguard: ALLOW web01 on old-node (live)")
    assert f"; host snapshot {site.snapshot} predates the last boot (" in err.getvalue()
    assert [r["decided_in"] for r in site.records()] == ["hook", "memo", "memo"]


def test_the_boot_time_is_read_as_the_full_path_reads_it(tmp_path: Path) -> None:
    from cpuguard.hook import hostfacts

    assert memo.BOOT_FORMAT == hostfacts.BOOT_FORMAT
    for text in ("btime 1700000000\n", "cpu 1\nbtime  1700000000 \nx 2\n", "btime\n", "btime x\n", "cpu 1\n", ""):
        path = tmp_path / "stat"
        path.write_text(text)
        full = hostfacts.boot_time(path)
        assert memo.boot_time(str(path)) == (int(full.timestamp()) if full else None), text
    assert memo.boot_time(str(tmp_path / "missing")) is None
    assert memo.stale_variant(1_699_999_999_999_999, str(path.with_name("x"))) is None
    path.write_text("btime 1700000000\n")
    assert memo.stale_variant(1_699_999_999_999_999, str(path)) == "2023-11-14 22:13"
    assert memo.stale_variant(1_700_000_000_000_000, str(path)) is None  # captured at the boot: not stale


def test_cpuguards_own_code_is_part_of_what_is_remembered(site: HookSite) -> None:
    decide(site)
    (entry,) = memo_entries(site)
    paths = {os.fsdecode(p) for p in entry.read_bytes().split(b"\0")[memo.HEAD_FIELDS :: 2]}
    package = Path(memo.__file__).resolve().parent.parent
    for name in ("verdict.py", "requirements.py", "domain.py", "hook/decision.py", "hook/memo.py", "hook/xmlkey.py"):
        assert str(package / name) in paths, name
    assert str(site.config) in paths and str(site.snapshot) in paths


def test_errors_are_not_remembered(site: HookSite) -> None:
    broken = b"<domain type='kvm'><name>db01</name><cpu mode='host-copy'/></domain>"
    assert decide(site, broken) == 1  # on_error
    assert memo_entries(site) == []
    assert recall(site, broken) == (None, "")


def test_a_decision_on_proc_cpuinfo_is_not_remembered(site: HookSite) -> None:
    site.snapshot.unlink()
    decide(site)
    assert memo_entries(site) == []


def test_nothing_is_remembered_while_an_input_is_young(site: HookSite) -> None:
    decide(site, now=lambda: datetime.now(UTC))
    assert memo_entries(site) == []


def test_without_a_cache_nothing_is_remembered_or_recalled(site: HookSite) -> None:
    options = site.options(cache=False)
    main([*options, "--", "db01", "migrate", "begin", "-"], stdin=io.BytesIO(DB01), stderr=io.StringIO(), now=later)
    assert not site.cache_dir.exists()
    assert memo.answer([*options, "--", "db01", "migrate", "begin", "-"], DB01, started=0.0) is None


def test_a_memo_entry_others_could_write_or_a_link_is_ignored(site: HookSite, tmp_path: Path) -> None:
    decide(site)
    (entry,) = memo_entries(site)
    assert entry.stat().st_mode & 0o777 == 0o600
    assert entry.parent.stat().st_mode & 0o777 == 0o700
    entry.chmod(0o620)
    assert lookup(site) is None
    entry.chmod(0o600)
    assert lookup(site) is not None
    moved = tmp_path / "elsewhere"
    entry.rename(moved)
    entry.symlink_to(moved)
    assert lookup(site) is None


def test_a_damaged_entry_is_a_miss_and_writes_nothing(site: HookSite) -> None:
    decide(site)
    (entry,) = memo_entries(site)
    whole = entry.read_bytes()
    for cut in (10, len(whole) // 2, len(whole) - 3):
        entry.write_bytes(whole[:cut])
        assert recall(site) == (None, "")
    entry.write_bytes(whole.replace(b"\x001\x00", b"\x00one\x00", 1))
    assert recall(site) == (None, "")
    assert len(site.records()) == 1


def test_a_new_context_clears_the_memo(site: HookSite) -> None:
    decide(site)
    assert len(memo_entries(site)) == 1
    assert cache.save(site.cache_dir, site.config, build_context(site.config), later().timestamp())
    assert memo_entries(site) == []


def test_the_installed_shim_answers_from_the_memo_without_cpuguards_core(site: HookSite, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    install(
        hooks, site.config, site.cache_dir, socket="", snapshot=lambda n: model_host("Westmere", load_knowledge(), "x")
    )
    shim = hook_path(hooks)
    first = run_shim(shim, "db01", "migrate", DB01)  # decides (its inputs are too young to remember)
    from cpuguard.hook import shim as shim_module

    settings = shim_module.read_settings(shim.read_text())
    shim_args = [
        "--config", settings["config"], "--cache-dir", settings["cache_dir"], "--on-error-exit", "1",
        "--audit-log", settings["audit_log"], "--deadline", settings["deadline"], "--", "db01", "migrate", "begin", "-",
    ]  # fmt: skip
    main(shim_args, stdin=io.BytesIO(DB01), stderr=io.StringIO(), now=later)  # what a later call leaves behind
    second = run_shim(shim, "db01", "migrate", DB01)
    assert second == first
    assert [r["decided_in"] for r in site.records()] == ["hook", "hook", "memo"]
    code = (
        "import sys\n"
        "sys.path.extend(sys.argv[1].split(':'))\n"
        "from cpuguard.hook.client import main\n"
        "code = main(sys.argv[2:])\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('cpuguard') or m in ('json', 'pathlib', 're', "
        "'dataclasses', 'yaml', 'hashlib')))\n"
    )
    done = subprocess.run(
        [settings["python"], "-I", "-S", "-c", code, settings["python_path"], *shim_args],
        input=DB01,
        capture_output=True,
        timeout=60,
    )
    assert done.stdout.decode().split(" ", 1) == [
        "1",
        "['cpuguard', 'cpuguard.hook', 'cpuguard.hook.client', 'cpuguard.hook.journal', 'cpuguard.hook.memo', "
        "'cpuguard.hook.xmlkey']\n",
    ], done.stderr
    assert site.records()[-1]["decided_in"] == "memo"


@given(st.text())
def test_json_strings_are_written_as_json_writes_them(text: str) -> None:
    assert journal.json_string(text) == json.dumps(text, ensure_ascii=False)


def test_a_record_filled_in_is_the_line_json_writes(site: HookSite) -> None:
    site.hook("db01", "migrate", DB01)
    site.hook("db01", "migrate", b"broken")
    for record in site.records():
        for caller in (None, "virtqemud", 'we"ird\\\n\x01é'):
            record.update(caller=caller, elapsed_ms=12.3, pid=4242, decided_in="memo")
            line = journal.fill(audit.segments(record), {k: record[k] for k in journal.PER_CALL})
            assert line == audit.encode(record)
            assert json.loads(line) == record
