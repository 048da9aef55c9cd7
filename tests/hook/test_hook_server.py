"""``cpuguard hook serve`` and the shim's client: same decisions, and the hook decides itself
whenever the server cannot answer for it."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hook_helpers import DOMAINS, HookSite, run_shim

from cpuguard.hook import cache, client, memo
from cpuguard.hook.context import build_context
from cpuguard.hook.entry import main
from cpuguard.hook.install import hook_path, install
from cpuguard.hook.server import hook_times, read_request
from cpuguard.hosts.synthetic import model_host
from cpuguard.knowledge import load_knowledge

SERVE = "import sys; from pathlib import Path; from cpuguard.hook.server import serve; print(serve({args}))"


def start_server(sock: Path, args: str = "") -> subprocess.Popen[str]:
    code = SERVE.format(args=f"Path({str(sock)!r}){args}")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {proc.communicate()}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "run" / "hook.sock"
    proc = start_server(sock)
    try:
        yield sock
    finally:
        stop(proc)


def installed(site: HookSite, hooks: Path, sock: Path | str) -> Path:
    install(
        hooks,
        site.config,
        site.cache_dir,
        socket=str(sock),
        snapshot=lambda n: model_host("Westmere", load_knowledge(), "old-node"),
    )
    return hook_path(hooks)


def test_socket_is_private(server: Path) -> None:
    assert server.stat().st_mode & 0o777 == 0o600
    assert server.parent.stat().st_mode & 0o777 == 0o700


def test_server_decides_exactly_as_the_hook_process(site: HookSite, server: Path, tmp_path: Path) -> None:
    via_server = installed(site, tmp_path / "a", server)
    by_itself = installed(site, tmp_path / "b", "")
    for vm, operation in [("db01", "migrate"), ("web01", "prepare"), ("db01", "restore")]:
        xml = (DOMAINS / f"{vm}.xml").read_bytes()
        assert run_shim(via_server, vm, operation, xml) == run_shim(by_itself, vm, operation, xml)
    records = site.records()
    assert [r["decided_in"] for r in records] == ["server", "hook"] * 3
    for served, itself in zip(records[::2], records[1::2], strict=True):
        for key in ("verdict", "decision", "missing", "message", "policy", "snapshot", "caller"):
            assert served[key] == itself[key], key


def test_server_records_the_hook_process_not_itself(site: HookSite, server: Path, tmp_path: Path) -> None:
    shim = installed(site, tmp_path / "hooks", server)
    proc = subprocess.Popen([str(shim), "db01", "migrate", "begin", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.communicate((DOMAINS / "db01.xml").read_bytes(), timeout=60)
    (record,) = site.records()
    assert (record["decided_in"], record["pid"]) == ("server", proc.pid)
    assert record["caller"] == Path(f"/proc/{os.getpid()}/comm").read_text().strip()


def test_no_server_means_the_hook_decides(site: HookSite, tmp_path: Path) -> None:
    shim = installed(site, tmp_path / "hooks", tmp_path / "nobody-listens.sock")
    run = run_shim(shim, "db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert run.exit_code == 1
    assert site.records()[0]["decided_in"] == "hook"


def test_another_mount_namespace_decides_itself(site: HookSite, server: Path, tmp_path: Path) -> None:
    """Its /etc/cpuguard may be another directory (each testbed daemon has its own)."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("needs root and unshare")
    shim = installed(site, tmp_path / "hooks", server)
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", str(shim), "db01", "migrate", "begin", "-"],
        input=(DOMAINS / "db01.xml").read_bytes(),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert site.records()[0]["decided_in"] == "hook"


def test_server_steps_aside_and_exits_when_its_code_changes(site: HookSite, tmp_path: Path) -> None:
    watched = tmp_path / "module.py"
    watched.write_text("x = 1\n")
    sock = tmp_path / "hook.sock"
    proc = start_server(sock, f", watch=[{str(watched)!r}]")
    try:
        shim = installed(site, tmp_path / "hooks", sock)
        xml = (DOMAINS / "db01.xml").read_bytes()
        run_shim(shim, "db01", "migrate", xml)
        watched.write_text("x = 22\n")
        run_shim(shim, "db01", "migrate", xml)
        out, _ = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert [r["decided_in"] for r in site.records()] == ["server", "hook"]
    assert out == "cpuguard's files changed since the server started: exiting to be restarted\n"
    assert not sock.exists()


def test_twenty_parallel_hooks_through_the_server(site: HookSite, server: Path, tmp_path: Path) -> None:
    shim = installed(site, tmp_path / "hooks", server)
    # a warm context, as on a host whose configuration was not edited in the last seconds
    assert cache.save(site.cache_dir, site.config, build_context(site.config), time.time() + 3600)
    xml = (DOMAINS / "db01.xml").read_bytes()
    procs = [
        subprocess.Popen([str(shim), f"vm{i:02d}", "migrate", "begin", "-"], stdin=subprocess.PIPE) for i in range(20)
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(xml)
        proc.stdin.close()
    assert [p.wait(timeout=120) for p in procs] == [1] * 20
    records = site.records()
    assert sorted(r["vm"] for r in records) == [f"vm{i:02d}" for i in range(20)]
    assert {r["decided_in"] for r in records} == {"server"}


def test_request_round_trip() -> None:
    args = ["--config", "/etc/cpuguard/config.yaml", "--", "vm1", "migrate", "begin", "-"]
    data = client.encode_request(
        args, b"<domain/>", namespace="mnt:[1]", pid=42, caller="libvirtd", started=100.25, answer_by=101.25
    )
    left, right = socket.socketpair()
    with left, right:
        left.sendall(data)
        left.shutdown(socket.SHUT_WR)
        fields, xml = read_request(right)
    assert fields == ["cpuguard-hook-2", "mnt:[1]", "42", "libvirtd", "100.25", "101.25", *args]
    assert xml == b"<domain/>"


def test_a_hung_server_costs_the_hook_a_second_not_its_deadline(site: HookSite, tmp_path: Path) -> None:
    """A server that takes the connection and never answers (stopped, deadlocked)."""
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock = tmp_path / "hung.sock"
    hung.bind(str(sock))
    hung.listen(8)  # connections queue up, nobody accepts them
    try:
        shim = installed(site, tmp_path / "hooks", sock)
        begun = time.monotonic()
        run = run_shim(shim, "db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
        took = time.monotonic() - begun
    finally:
        hung.close()
    assert run.exit_code == 1
    assert run.stderr.startswith("cpuguard: BLOCK db01 on old-node (live)")
    (record,) = site.records()
    assert record["decided_in"] == "hook"
    assert record["elapsed_ms"] >= client.SERVER_WAIT * 1000  # counted from the hook's start
    assert took < 5  # deadline_seconds' default, which counts from the hook's start


def test_the_hook_waits_for_the_server_a_second_at_most_and_a_quarter_of_its_deadline() -> None:
    assert client.server_wait(["--config", "c", "--", "vm", "migrate", "begin", "-"]) == 1.0
    assert client.server_wait(["--deadline", "0.4", "--", "vm"]) == 0.1
    assert client.server_wait(["--deadline", "60", "--", "vm"]) == 1.0
    assert client.server_wait(["--", "vm", "--deadline", "0.4"]) == 1.0
    assert client.server_wait(["--deadline", "soon", "--", "vm"]) == 1.0


def test_the_deadline_counts_from_the_hooks_start(site: HookSite) -> None:
    """Time spent before the entry (the interpreter, waiting for a server) is part of the deadline."""
    err = io.StringIO()
    args = [*site.options(), "--", "db01", "migrate", "begin", "-"]
    xml = (DOMAINS / "db01.xml").read_bytes()
    code = main(args, stdin=io.BytesIO(xml), stderr=err, started=time.monotonic() - 10)
    assert code == 1
    assert "could not decide: no decision within 5 s (--deadline)" in err.getvalue()
    assert site.records()[0]["elapsed_ms"] >= 10000


def test_the_server_gives_up_with_the_hook_and_logs_nothing(site: HookSite) -> None:
    """Past the moment the hook stopped waiting, the server's child answers 'decide yourself', silently."""
    err = io.StringIO()
    args = [*site.options(), "--", "db01", "migrate", "begin", "-"]
    now = time.monotonic()
    xml = (DOMAINS / "db01.xml").read_bytes()
    code = main(args, stdin=io.BytesIO(xml), stderr=err, started=now - 1, answer_by=now)
    assert (code, err.getvalue(), site.records()) == (client.DECIDE_YOURSELF, "", [])


def test_hook_times_from_the_request_are_checked() -> None:
    assert hook_times("99.5", "100.5", 100.0) == (99.5, 100.5)
    assert hook_times("not a time", "100.5", 100.0) == (100.0, 100.0)
    assert hook_times("100.5", "101.5", 100.0) == (100.0, 100.0)  # started in the future
    assert hook_times("1.0", "2.0", 1000.0) == (1000.0, 1000.0)  # older than any deadline
    assert hook_times("99.5", "99.0", 100.0) == (100.0, 100.0)  # gives up before it started


def test_truncated_request_is_refused() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall((100).to_bytes(4, "big") + b"short")
        left.shutdown(socket.SHUT_WR)
        with pytest.raises(ValueError, match="truncated request"):
            read_request(right)


def test_socket_option() -> None:
    assert client.split_socket_option(["--socket", "/s", "--config", "c"]) == ("/s", ["--config", "c"])
    assert client.split_socket_option(["--socket", "", "x"]) == (None, ["x"])
    assert client.split_socket_option(["x"]) == (None, ["x"])


def test_the_servers_decisions_are_remembered_after_it_answered(site: HookSite, server: Path, tmp_path: Path) -> None:
    shim = installed(site, tmp_path / "hooks", server)
    time.sleep(cache.RACY_SECONDS + 0.2)  # inputs this young are neither cached nor remembered
    xml = (DOMAINS / "db01.xml").read_bytes()
    served = run_shim(shim, "db01", "migrate", xml)
    directory = Path(memo.memo_dir(str(site.cache_dir), str(site.config)))
    deadline = time.monotonic() + 30
    while not (directory.exists() and any(directory.iterdir())):
        assert time.monotonic() < deadline, "the server's child did not remember its decision"
        time.sleep(0.05)
    assert run_shim(shim, "db01", "migrate", xml) == served
    assert [r["decided_in"] for r in site.records()] == ["server", "memo"]
