"""``cpuguard hook serve``: decide hook calls with cpuguard already loaded.

The server imports the decision modules once, then forks a child per
request: the child runs :func:`cpuguard.hook.entry.main` exactly as the hook
process would (same cache, deadline, on_error and audit log), with the
requester's pid and parent recorded. It refuses, and the hook decides
itself, when

* the requester runs in another mount namespace (its paths name other files),
* its user differs from the server's (SO_PEERCRED),
* cpuguard's own files changed since the server started (an upgrade): the
  server then exits, for systemd to start the new code.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cpuguard.hook.cache import Signatures, signatures
from cpuguard.hook.client import DECIDE_YOURSELF, PROTOCOL, mount_namespace
from cpuguard.hook.context import loaded_package_files

MAX_AGE = 120.0  # deadline_seconds' upper bound (docs/config.md)
MAX_REQUEST = 16 * 1024 * 1024  # domain XML is a few KiB; cpuguard refuses XML above 8 MiB anyway


def preload() -> None:
    """Import what a decision needs, so that each forked child starts with it loaded."""
    import cpuguard.domain
    import cpuguard.hook.audit
    import cpuguard.hook.cache
    import cpuguard.hook.decision
    import cpuguard.hook.entry
    import cpuguard.hook.hostfacts
    import cpuguard.render.verdict_text
    import cpuguard.requirements
    import cpuguard.verdict  # noqa: F401


def read_request(conn: socket.socket) -> tuple[list[str], bytes]:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too large")
    if len(data) < 4:
        raise ValueError("truncated request")
    size = int.from_bytes(data[:4], "big")
    header, xml = data[4 : 4 + size], data[4 + size :]
    if len(header) != size:
        raise ValueError("truncated request")
    return [os.fsdecode(f) for f in header.split(b"\0")], xml


def answer(conn: socket.socket, code: int, message: str = "") -> None:
    conn.sendall(bytes([code]) + message.encode())
    conn.shutdown(socket.SHUT_WR)  # the whole answer: the hook reads until the end of the stream


def handle(conn: socket.socket, namespace: str) -> None:
    """Serve one request (in a forked child)."""
    from cpuguard.hook.entry import Requester, main

    try:
        fields, xml = read_request(conn)
    except (OSError, ValueError):
        return
    if len(fields) < 6 or fields[0].encode() != PROTOCOL or fields[1] != namespace:
        answer(conn, DECIDE_YOURSELF)
        return
    started, answer_by = hook_times(fields[4], fields[5], time.monotonic())
    requester = Requester(int(fields[2]) if fields[2].isdigit() else 0, fields[3] or None, decided_in="server")
    err = io.StringIO()
    sent: list[int] = []

    def send(code: int) -> None:  # before the decision is remembered: the hook need not wait for that
        answer(conn, code, err.getvalue())
        sent.append(code)

    stdin = io.BytesIO(xml)
    code = main(
        fields[6:], stdin=stdin, stderr=err, requester=requester, started=started, answer_by=answer_by, answered=send
    )
    if not sent:
        answer(conn, code, err.getvalue())


def hook_times(started: str, answer_by: str, now: float) -> tuple[float, float]:
    """When the hook started and until when it waits (time.monotonic(), one clock for every process
    in a time namespace). Values that cannot be right (not numbers, in the future, or older than
    any deadline) are replaced by ``now``: the server then has as long as the hook process would."""
    try:
        begun, until = float(started), float(answer_by)
    except ValueError:
        return now, now
    if not (now - MAX_AGE <= begun <= now and begun <= until <= begun + MAX_AGE):
        return now, now
    return begun, until


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def listen(path: Path) -> socket.socket:
    """A socket only this user can use; a stale one from a dead server is replaced."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(64)
    return sock


def serve(
    path: Path,
    *,
    watch: Sequence[str] | None = None,
    ready: Callable[[], None] | None = None,
    max_requests: int | None = None,
) -> str:
    """Serve until cpuguard's files change (returns why) or ``max_requests`` were served."""
    preload()
    watched = list(watch) if watch is not None else loaded_package_files()
    started: Signatures = signatures(watched)
    namespace = mount_namespace()
    uid = os.geteuid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    sock = listen(path)
    if ready:
        ready()
    served = 0
    try:
        while max_requests is None or served < max_requests:
            conn, _ = sock.accept()
            with conn:
                if peer_uid(conn) != uid:
                    continue
                if signatures(watched) != started:
                    answer(conn, DECIDE_YOURSELF)
                    return "cpuguard's files changed since the server started: exiting to be restarted"
                if os.fork() == 0:
                    try:
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        sock.close()
                        handle(conn, namespace)
                    finally:
                        os._exit(0)
            served += 1
    finally:
        sock.close()
        path.unlink(missing_ok=True)
    return f"served {served} requests"
