"""Faults: a full disk, a read-only file system, a writer killed half-way, a file replaced
while it is read, a clock that jumps. docs/security.md says what happens in each case;
these tests hold cpuguard to it.

The disk faults are real: a small tmpfs mounted for the test (root only; CI runs as root).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cpuguard.errors import BadInput
from cpuguard.hosts.snapshot import parse_snapshot, snapshot_to_dict, write_atomically
from cpuguard.hosts.sources import host_from_file, resolve_host
from cpuguard.knowledge import Knowledge
from cpuguard.policy import policy_from_data
from cpuguard.records import HostFacts, Move
from cpuguard.requirements import build_requirements
from cpuguard.verdict import decide
from tests.conftest import ROOT, in_ci


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        message = f"cannot mount a tmpfs: {done.stderr.strip()}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB file system: full after one large write."""
    where = tmp_path / "fs"
    _mount_tmpfs(where, "64k")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def _snapshot_text(knowledge: Knowledge, source: str, name: str) -> str:
    facts = resolve_host(source, knowledge, name=name)
    return json.dumps(snapshot_to_dict(facts), indent=2) + "\n"


# -- writing a snapshot: temporary file, fsync, rename -----------------------------------------


def test_full_disk_leaves_the_old_snapshot_and_no_half_file(small_fs: Path, knowledge: Knowledge) -> None:
    target = small_fs / "host.json"
    old = _snapshot_text(knowledge, "model:Westmere", "node3")
    write_atomically(target, old)
    with pytest.raises(OSError) as info:
        write_atomically(target, old + " " * 200_000)  # larger than the file system
    assert info.value.errno == 28  # ENOSPC
    assert target.read_text() == old
    assert sorted(p.name for p in small_fs.iterdir()) == ["host.json"], "a temporary file was left behind"
    assert host_from_file(target, knowledge).name == "node3"


def test_read_only_file_system_leaves_the_old_snapshot(small_fs: Path, knowledge: Knowledge) -> None:
    target = small_fs / "host.json"
    old = _snapshot_text(knowledge, "model:Westmere", "node3")
    write_atomically(target, old)
    _remount_read_only(small_fs)
    with pytest.raises(OSError) as info:
        write_atomically(target, _snapshot_text(knowledge, "model:Skylake-Server", "node3"))
    assert info.value.errno == 30  # EROFS
    assert target.read_text() == old


_WRITER = """
import sys
from pathlib import Path
from cpuguard.hosts.snapshot import write_atomically
target, texts = Path(sys.argv[1]), [Path(sys.argv[2]).read_text(), Path(sys.argv[3]).read_text()]
print("ready", flush=True)
i = 0
while True:
    write_atomically(target, texts[i % 2])
    i += 1
"""


def test_a_writer_killed_half_way_leaves_a_whole_snapshot(tmp_path: Path, knowledge: Knowledge) -> None:
    """SIGKILL a process rewriting a snapshot in a loop, 30 times at random moments."""
    texts = [_snapshot_text(knowledge, "model:Westmere", "a"), _snapshot_text(knowledge, "model:EPYC", "b")]
    texts[1] += " " * 300_000  # a larger write widens the window a kill can land in
    sources = [tmp_path / "a.txt", tmp_path / "b.txt"]
    for path, text in zip(sources, texts, strict=True):
        path.write_text(text)
    target = tmp_path / "out" / "host.json"
    rng = random.Random(6)
    for _ in range(30):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), *map(str, sources)],
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if target.exists():
            assert target.read_text() in texts, "a killed writer left half a snapshot"
            host_from_file(target, knowledge)
    leftovers = [p.name for p in target.parent.iterdir() if p.name != "host.json"]
    assert all(name.startswith(".host.json.") for name in leftovers)  # temporary files, never the snapshot


# -- reading a snapshot while it is replaced ---------------------------------------------------


def _hammer(write: object, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        i = 0
        while not stop.is_set():
            write(i)  # type: ignore[operator]
            i += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_a_snapshot_replaced_by_rename_is_read_whole(tmp_path: Path, knowledge: Knowledge) -> None:
    texts = [_snapshot_text(knowledge, "model:Westmere", "a"), _snapshot_text(knowledge, "model:EPYC", "b")]
    expected = {host_from_file(_write(tmp_path / f"{i}.json", t), knowledge).flags for i, t in enumerate(texts)}
    target = _write(tmp_path / "host.json", texts[0])
    stop = threading.Event()
    thread = _hammer(lambda i: write_atomically(target, texts[i % 2]), stop)
    try:
        for _ in range(300):
            assert host_from_file(target, knowledge, name="x").flags in expected
    finally:
        stop.set()
        thread.join()


def test_a_snapshot_rewritten_in_place_is_refused_or_read_whole(tmp_path: Path, knowledge: Knowledge) -> None:
    """A copy tool that truncates and rewrites (not atomic): a torn read is refused, never misread."""
    texts = [_snapshot_text(knowledge, "model:Westmere", "a"), _snapshot_text(knowledge, "model:EPYC", "b")]
    expected = {host_from_file(_write(tmp_path / f"{i}.json", t), knowledge).flags for i, t in enumerate(texts)}
    target = _write(tmp_path / "host.json", texts[0])
    stop = threading.Event()
    thread = _hammer(lambda i: target.write_text(texts[i % 2]), stop)
    try:
        for _ in range(300):
            try:
                assert host_from_file(target, knowledge, name="x").flags in expected
            except BadInput as exc:
                assert str(exc).startswith(f"{target}: ") and "\n" not in str(exc)
    finally:
        stop.set()
        thread.join()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- the audit log -----------------------------------------------------------------------------


def test_audit_log_on_a_full_disk_keeps_only_whole_records(small_fs: Path) -> None:
    """The record the disk cannot take whole is cut off: the log keeps whole lines, and the
    next record after space is freed starts on a line of its own."""
    audit = pytest.importorskip("cpuguard.hook.audit")
    log = small_fs / "audit.jsonl"
    with pytest.raises(OSError):
        for i in range(10_000):
            audit.append(log, {"vm": "x" * 300, "i": i})
    data = log.read_bytes()
    assert data.endswith(b"\n"), "half a record was left at the end of the log"
    log.write_bytes(data[: len(data) // 2].rpartition(b"\n")[0] + b"\n")  # space again
    audit.append(log, {"vm": "after", "i": -1})
    assert [json.loads(line)["i"] for line in log.read_bytes().splitlines()][-1] == -1


def test_audit_log_on_a_read_only_file_system_raises_oserror(small_fs: Path) -> None:
    """The hook catches OSError from the audit log: the decision stands and the loss is reported
    on stderr and to syslog (cpuguard/hook/entry.py). Here: the log is left as it was."""
    audit = pytest.importorskip("cpuguard.hook.audit")
    log = small_fs / "audit.jsonl"
    audit.append(log, {"vm": "pbx01", "i": 0})
    before = log.read_bytes()
    _remount_read_only(small_fs)
    with pytest.raises(OSError) as info:
        audit.append(log, {"vm": "pbx01", "i": 1})
    assert info.value.errno == 30
    assert log.read_bytes() == before


# -- the clock ---------------------------------------------------------------------------------


@pytest.mark.parametrize("jump", [timedelta(days=-3650), timedelta(seconds=-1), timedelta(days=3650)])
def test_the_verdict_does_not_depend_on_when_facts_were_captured(knowledge: Knowledge, jump: timedelta) -> None:
    """A clock set years off when a snapshot was taken changes nothing in the decision: it never
    reads the time (the hook only notes a snapshot older than the last boot)."""
    facts = resolve_host("model:Haswell-noTSX", knowledge, name="node3")
    policy = policy_from_data({"vm": "db01", "requires": {"level": "x86-64-v3"}}, "db01.yaml", knowledge)
    req = build_requirements("db01", None, policy, Move.COLD, knowledge)
    verdicts = []
    for captured in (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC) + jump):
        moved = HostFacts(**{**facts.__dict__, "captured_at": captured})
        read = parse_snapshot(json.dumps(snapshot_to_dict(moved)).encode(), "host.json", knowledge.vocabulary)
        assert read.captured_at == captured
        verdicts.append(decide(req, read))
    assert verdicts[0] == verdicts[1]
