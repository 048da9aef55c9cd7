"""What the shim runs: hand the call to ``cpuguard hook serve`` if it runs, else decide here.

Starting Python and importing cpuguard's decision modules takes tens of
milliseconds on every VM start and incoming migration; a server that has
them loaded answers in a few (docs/hook.md, "Speed"). This module imports
nothing beyond what the interpreter has loaded at start-up plus ``_socket``
(the ``socket`` module's enums and selectors cost more than the answer),
and falls back to :func:`cpuguard.hook.entry.main` whenever the server is
absent, refuses, or fails, so the server is only ever an accelerator.

Wire format (both ends in this package): the request is a 4-byte big-endian
length, then that many bytes of NUL-separated fields (protocol version, the
caller's mount namespace, its pid, its parent's name, the hook arguments),
then the domain XML until the end of the stream. The answer is one byte, the
exit code (:data:`DECIDE_YOURSELF` for "decide in the hook process"), then
the message until the end of the stream.
"""

from __future__ import annotations

import _socket
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy understands this form)
if TYPE_CHECKING:
    from collections.abc import Sequence

PROTOCOL = b"cpuguard-hook-1"
DEFAULT_SOCKET = "/run/cpuguard/hook.sock"
DECIDE_YOURSELF = 255
#: Longer than any decision's deadline_seconds should be; then the hook decides itself.
TIMEOUT = 15.0


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


def encode_request(args: Sequence[str], xml: bytes, *, namespace: str, pid: int, caller: str) -> bytes:
    fields = [PROTOCOL, os.fsencode(namespace), str(pid).encode(), os.fsencode(caller)]
    fields += [os.fsencode(a) for a in args]
    header = b"\0".join(fields)
    return len(header).to_bytes(4, "big") + header + xml


def ask(socket_path: str, args: Sequence[str], xml: bytes, timeout: float = TIMEOUT) -> tuple[int, str] | None:
    """The server's (exit code, message), or None when the hook must decide itself."""
    request = encode_request(args, xml, namespace=mount_namespace(), pid=os.getpid(), caller=parent_name())
    chunks = []
    try:
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        conn.settimeout(timeout)
        conn.connect(socket_path)
        conn.sendall(request)
        conn.shutdown(_socket.SHUT_WR)
        while chunk := conn.recv(65536):
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
    socket_path, args = split_socket_option(sys.argv[1:] if argv is None else argv)
    xml = sys.stdin.buffer.read()
    answer = ask(socket_path, args, xml) if socket_path else None
    if answer is not None:
        code, message = answer
        if message:
            sys.stderr.write(message)
            sys.stderr.flush()
        return code
    import io

    from cpuguard.hook.entry import main as decide_here

    return decide_here(args, stdin=io.BytesIO(xml))
