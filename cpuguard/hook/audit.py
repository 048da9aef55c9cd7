"""The audit log: one JSON object per line for every hook decision (docs/hook.md, "Audit log").

Lines are written by :mod:`cpuguard.hook.journal` (whole lines, never
interleaved, under concurrency); this module encodes records and reads the
log back for ``cpuguard audit show`` and ``cpuguard hook status``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpuguard.hook.journal import append_line

#: Keys every line has (an interface: tools parse this log).
KEYS = (
    "time", "host", "vm", "operation", "event", "move", "verdict", "decision", "mode", "missing",
    "forbidden_present", "problems", "warnings", "notes", "error", "message", "policy", "guest_scan", "snapshot",
    "config", "cpuguard_version", "pid", "caller", "decided_in", "elapsed_ms",
)  # fmt: skip


def encode(record: Mapping[str, Any]) -> bytes:
    """One line: compact JSON, no raw newline possible (json escapes it)."""
    return (json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def append(path: Path, record: Mapping[str, Any]) -> None:
    append_line(str(path), encode(record))


@dataclass(frozen=True)
class BadLine:
    number: int
    text: str
    problem: str


def read(path: Path) -> Iterator[dict[str, Any] | BadLine]:
    """Every record in the log, oldest first; lines that are not audit records as :class:`BadLine`."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError as exc:
                yield BadLine(number, text, f"not JSON: {exc}")
                continue
            if not isinstance(value, dict):
                yield BadLine(number, text, "not a JSON object")
                continue
            problem = record_problem(value)
            if problem:
                yield BadLine(number, text, problem)
                continue
            yield value


#: What every record says and ``audit show`` prints; a line without them is not one of the hook's records.
IDENTITY = ("time", "host", "vm", "operation", "verdict", "decision")


def record_problem(record: Mapping[str, Any]) -> str | None:
    """Why a JSON object is not an audit record (a key missing, or not text), or None."""
    missing = [key for key in IDENTITY if not isinstance(record.get(key), str)]
    if missing:
        return f"not an audit record: no {', '.join(missing)}"
    if record_time(record) is None:
        return f"not an audit record: time {record['time']!r} is not an ISO 8601 time"
    return None


@dataclass(frozen=True)
class Filter:
    """Which records ``cpuguard audit show`` prints; unset fields match everything."""

    vms: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    verdicts: frozenset[str] = frozenset()
    since: datetime | None = None

    def matches(self, record: Mapping[str, Any]) -> bool:
        for wanted, key in (
            (self.vms, "vm"),
            (self.hosts, "host"),
            (self.operations, "operation"),
            (self.verdicts, "verdict"),
        ):
            if wanted and record.get(key) not in wanted:
                return False
        if self.since is not None:
            when = record_time(record)
            if when is None or when < self.since:
                return False
        return True


def record_time(record: Mapping[str, Any]) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def summary(record: Mapping[str, Any]) -> str:
    """One human line per record for ``audit show``."""
    verdict = str(record.get("verdict") or "?").upper()
    decision = record.get("decision")
    if verdict == "ERROR":
        verdict = f"ERROR->{str(decision).upper()}"
    head = f"{record.get('time')}  {record.get('host')}  {record.get('vm')}  {record.get('operation')}  {verdict}"
    if record.get("error"):
        return f"{head}  {record['error']}"
    missing = record.get("missing") or []
    detail = []
    if missing:
        detail.append("missing " + ", ".join(str(m.get("feature")) for m in missing if isinstance(m, dict)))
    detail.extend(str(p) for p in record.get("problems") or [])
    detail.extend(str(w) for w in record.get("warnings") or [])
    return f"{head}  {'; '.join(detail)}" if detail else head
