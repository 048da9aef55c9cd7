"""Write one decision out: its audit line, its message on stderr, and a loss of either to syslog.

The hook process imports only ``os`` and ``fcntl`` for it, and writes the
record without the ``json`` package (which loads ``re``): :func:`json_line`
writes byte for byte what ``json.dumps(record, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`` writes (tests/hook/test_hook_audit.py
checks it).

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

#: JSON's escapes (RFC 8259 section 7), as the json module writes them with ensure_ascii=False.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_TABLE = {c: _ESCAPES.get(chr(c), f"\\u{c:04x}") for c in (*range(32), ord('"'), ord("\\"))}


def json_string(text: str) -> str:
    return '"' + text.translate(_TABLE) + '"'


def json_value(value: object) -> str:
    """JSON for a record's values: text, numbers, booleans, null, lists and objects (keys sorted)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        return json_string(value)
    if isinstance(value, int | float):
        return repr(value)  # as json writes them (float.__repr__)
    if isinstance(value, list | tuple):
        return "[" + ",".join(json_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json_string(k)}:{json_value(value[k])}" for k in sorted(value)) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def json_line(record: dict[str, object]) -> bytes:
    """One audit line: compact JSON, keys sorted, no raw newline possible."""
    return (json_value(record) + "\n").encode()


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
