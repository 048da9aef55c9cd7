"""Write one decision out: its audit line, its message on stderr, and a loss of either to syslog.

Shared by the full decision (:mod:`cpuguard.hook.entry`) and a remembered one
(:mod:`cpuguard.hook.memo`), which must not import more than the interpreter
has loaded at start-up: so this module imports only ``os`` and ``fcntl``, and
fills a remembered record's per-call fields in without the ``json`` module
(which pulls in ``re``). The lines it writes are byte for byte what
``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
writes (tests/hook/test_hook_memo.py checks it).

Concurrency (docs/hook.md, "Audit log"): each line goes out in one ``write``
on a descriptor opened with ``O_APPEND`` (the kernel positions every append
at the end of the file) while holding an exclusive ``flock``, so lines from
concurrent hooks never interleave, also where a large write could be split.
"""

from __future__ import annotations

import fcntl
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy understands this form)
if TYPE_CHECKING:
    from typing import IO

#: The fields that differ between two calls with the same decision, in the order JSON's sort_keys puts them.
PER_CALL = ("caller", "decided_in", "elapsed_ms", "pid", "time")

#: JSON's escapes (RFC 8259 section 7), as the json module writes them with ensure_ascii=False.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def json_string(text: str) -> str:
    return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if c < " " else c) for c in text) + '"'


def json_scalar(value: str | int | float | None) -> str:
    """A per-call field as JSON: text, a whole number, a duration in milliseconds, or null."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return json_string(value)
    return repr(value)  # int, and float as json writes it (float.__repr__)


def fill(segments: list[bytes], values: dict[str, str | int | float | None]) -> bytes:
    """A record line from the segments between its per-call fields (:data:`PER_CALL`, in order)."""
    parts = [segments[0]]
    for name, segment in zip(PER_CALL, segments[1:], strict=True):
        parts += [json_scalar(values[name]).encode(), segment]
    return b"".join(parts)


def append_line(path: str, line: bytes) -> None:
    """Append one whole line to the audit log, or nothing (the part a full disk took is cut off again)."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o750, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            written = os.write(fd, line)
            while written < len(line):  # only on a full disk or a signal; still under the lock
                written += os.write(fd, line[written:])
        except OSError:
            # A full disk can take part of the line: cut it off, so that the log keeps whole
            # lines only and the next record does not start in the middle of this one.
            os.ftruncate(fd, end)
            raise
    finally:
        os.close(fd)  # releases the lock


def syslog_error(message: str) -> None:
    """Errors go to syslog too: on an allowed start libvirt drops the hook's stderr."""
    import syslog

    syslog.openlog("cpuguard", syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(syslog.LOG_ERR, message)


def deliver(audit_log: str | None, line: bytes, message: str, *, vm: str, operation: str, err: IO[str]) -> None:
    """Log the decision, then say it: the one line on stderr, with a lost audit record added to it."""
    try:
        if audit_log is None:
            raise OSError("the configuration cannot be read and no --audit-log names the log")
        append_line(audit_log, line)
    except OSError as exc:
        # The decision stands; losing its record is reported as loudly as an error.
        problem = f"audit log {audit_log or '(unknown)'} not written: {exc.strerror or exc}"
        message = f"{message}; {problem}" if message else f"cpuguard: {problem}"
        syslog_error(f"{vm} {operation}: {problem}")
    if message:
        err.write(message + "\n")
        err.flush()
