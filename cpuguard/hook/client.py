"""What the shim runs: a remembered decision, else ``cpuguard hook serve`` if it runs, else decide here.

Starting Python and importing cpuguard's decision modules takes tens of
milliseconds on every VM start and incoming migration (docs/hook.md,
"Speed"). A call that repeats an earlier one is answered from the memo
(:mod:`cpuguard.hook.memo`, which imports next to nothing); a new one goes to
the server if one runs (it has the modules loaded), else to
:func:`cpuguard.hook.entry.main` in this process. This module imports nothing
beyond what the interpreter has loaded at start-up, plus ``_socket`` to ask
the server (the ``socket`` module's enums and selectors cost more than the
answer), and the hook decides itself whenever the server is absent, refuses,
or fails, so the server is only ever an accelerator.

The hook's time limit holds whatever the server does: the client waits for it
at most :func:`server_wait` (a second, less for a short deadline), counted
from the hook's start, and then decides itself within what is left of the
deadline, which is also counted from the hook's start. The server is told
both moments; it counts the deadline from the hook's start too, and stops,
logging nothing, once the client has stopped waiting.

Wire format (both ends in this package): the request is a 4-byte big-endian
length, then that many bytes of NUL-separated fields (protocol version, the
caller's mount namespace, its pid, its parent's name, when the hook started
and until when it waits for the answer -- ``time.monotonic()`` values, the
same clock in every process -- then the hook arguments), then the domain XML
until the end of the stream. The answer is one byte, the exit code
(:data:`DECIDE_YOURSELF` for "decide in the hook process"), then the message
until the end of the stream.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy understands this form)
if TYPE_CHECKING:
    from collections.abc import Sequence

PROTOCOL = b"cpuguard-hook-2"
DEFAULT_SOCKET = "/run/cpuguard/hook.sock"
DECIDE_YOURSELF = 255
#: The longest the hook waits for the server (a warm server answers in milliseconds); never more than
#: a quarter of the deadline, so that the hook has the rest to decide itself.
SERVER_WAIT = 1.0
DEFAULT_DEADLINE = 5.0  # as cpuguard.hook.entry's, when the shim passes no --deadline


def mount_namespace(pid: str = "self") -> str:
    """Files named in the arguments mean the same to the server only inside one mount namespace."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return "unknown"


def parent_name() -> str:
    try:
        with open(f"/proc/{os.getppid()}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def encode_request(
    args: Sequence[str], xml: bytes, *, namespace: str, pid: int, caller: str, started: float, answer_by: float
) -> bytes:
    fields = [PROTOCOL, os.fsencode(namespace), str(pid).encode(), os.fsencode(caller)]
    fields += [repr(started).encode(), repr(answer_by).encode()]
    fields += [os.fsencode(a) for a in args]
    header = b"\0".join(fields)
    return len(header).to_bytes(4, "big") + header + xml


def server_wait(args: Sequence[str]) -> float:
    """How long to wait for the server: :data:`SERVER_WAIT`, at most a quarter of ``--deadline``."""
    deadline = DEFAULT_DEADLINE
    options = list(args[: list(args).index("--")] if "--" in args else args)
    if "--deadline" in options[:-1]:
        value = options[options.index("--deadline") + 1]
        if value.replace(".", "", 1).isdigit():  # else the entry reports the bad option
            deadline = float(value)
    return max(min(SERVER_WAIT, deadline / 4), 0.0)


def ask(
    socket_path: str, args: Sequence[str], xml: bytes, *, started: float, answer_by: float
) -> tuple[int, str] | None:
    """The server's (exit code, message), or None when the hook must decide itself (also when the
    server has not answered by ``answer_by``, a ``time.monotonic()`` value)."""
    namespace, caller = mount_namespace(), parent_name()
    request = encode_request(
        args, xml, namespace=namespace, pid=os.getpid(), caller=caller, started=started, answer_by=answer_by
    )
    import _socket  # not at the top: a remembered decision needs no socket

    chunks = []
    try:
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        left = answer_by - time.monotonic()
        if left <= 0:
            return None
        conn.settimeout(left)
        conn.connect(socket_path)
        conn.sendall(request)
        conn.shutdown(_socket.SHUT_WR)
        while True:
            left = answer_by - time.monotonic()
            if left <= 0:
                return None  # too late: the server stops too, without logging (cpuguard.hook.entry)
            conn.settimeout(left)
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None  # no server, a stale socket, a timeout: decide here
    finally:
        conn.close()
    answer = b"".join(chunks)
    if not answer or answer[0] == DECIDE_YOURSELF:
        return None
    return answer[0], answer[1:].decode("utf-8", "replace")


def split_socket_option(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    args = list(argv)
    if len(args) >= 2 and args[0] == "--socket":
        return args[1] or None, args[2:]
    return None, args


def main(argv: Sequence[str] | None = None) -> int:
    """``[--socket PATH] ENTRY-ARGS...``: the server's answer, or the entry's own decision."""
    started = time.monotonic()  # the hook's deadline counts from here
    socket_path, args = split_socket_option(sys.argv[1:] if argv is None else argv)
    xml = sys.stdin.buffer.read()
    from cpuguard.hook.memo import answer as remembered

    code = remembered(args, xml, started=started)
    if code is not None:
        return code
    answer = None
    if socket_path:
        answer = ask(socket_path, args, xml, started=started, answer_by=started + server_wait(args))
    if answer is not None:
        code, message = answer
        if message:
            sys.stderr.write(message)
            sys.stderr.flush()
        return code
    import io

    from cpuguard.hook.entry import main as decide_here

    return decide_here(args, stdin=io.BytesIO(xml), started=started)
