"""Rehearsals kept as evidence: the latest of each VM, host and command beside the policies
(``POLICIES/rehearsals/<vm>.json``, read by ``check`` and ``plan`` for their reports), and
one JSON line per rehearsal in the rehearsal log (``rehearsal_log`` of the configuration).

The file is generated and rewritten whole after each rehearsal (format, an interface)::

    {"format": "cpuguard-rehearsals/1", "vm": "pbx01",
     "rehearsals": [{"time": "2026-12-06T10:00:00+00:00", "host": "old-node", "command": [...],
                     "outcome": "failed-cpu", "reason": "...", "fault": {...}, ...}]}

A log line is the same object with ``"event": "rehearse"`` and ``"vm"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpuguard import __version__
from cpuguard.errors import BadInput
from cpuguard.records import Rehearsed
from cpuguard.rehearse.records import Rehearsal

FORMAT = "cpuguard-rehearsals/1"
REHEARSALS_DIR = "rehearsals"
MAX_BYTES = 16 * 1024 * 1024
#: Rehearsals kept per VM (the latest of each host and command).
MAX_KEPT = 200


def evidence_path(policies: Path, vm: str) -> Path:
    return policies / REHEARSALS_DIR / f"{vm}.json"


def to_record(rehearsal: Rehearsal, when: datetime) -> dict[str, Any]:
    from cpuguard.render.jsonout import to_data

    record: dict[str, Any] = to_data(rehearsal)
    record["time"] = when.isoformat(timespec="seconds")
    record["cpuguard_version"] = __version__
    return record


def _read(path: Path) -> list[dict[str, Any]]:
    from cpuguard.jsonsafe import parse_json
    from cpuguard.xmlsafe import read_bytes

    if not path.is_file():
        return []
    raw = parse_json(read_bytes(path, MAX_BYTES), path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("rehearsals"), list):
        raise BadInput(path, f"not a rehearsal record (expected format {FORMAT})")
    return [r for r in raw["rehearsals"] if isinstance(r, dict)]


def store(policies: Path, rehearsals: Sequence[Rehearsal], when: datetime) -> list[Path]:
    """Keep ``rehearsals`` as the latest of their VM, host and command; the files written."""
    from cpuguard.scan.output import write_atomically

    written = []
    for vm in sorted({r.vm for r in rehearsals}):
        path = evidence_path(policies, vm)
        fresh = [to_record(r, when) for r in rehearsals if r.vm == vm]
        replaced = {(r["host"], tuple(r["command"])) for r in fresh}
        try:
            kept = [r for r in _read(path) if (r.get("host"), tuple(r.get("command") or ())) not in replaced]
        except BadInput:
            kept = []  # a broken record is replaced by the new one
        records = (kept + fresh)[-MAX_KEPT:]
        path.parent.mkdir(exist_ok=True)
        text = json.dumps({"format": FORMAT, "vm": vm, "rehearsals": records}, indent=1, sort_keys=True)
        write_atomically(path, text + "\n")
        written.append(path)
    return written


def log_line(rehearsal: Rehearsal, when: datetime) -> bytes:
    """One line of the rehearsal log, encoded as the hook's audit lines are."""
    from cpuguard.hook.audit import encode

    return encode({"event": "rehearse", **to_record(rehearsal, when)})


def append_log(path: Path, rehearsals: Sequence[Rehearsal], when: datetime) -> None:
    """One whole line per rehearsal, appended as the hook appends its audit lines (under a lock;
    a line a full disk cut short is taken back)."""
    from cpuguard.hook.journal import append_line

    for rehearsal in rehearsals:
        append_line(str(path), log_line(rehearsal, when))


def _evidence(vm: str, raw: dict[str, Any], where: Path) -> Rehearsed:
    try:
        fault = raw.get("fault") or {}
        place = None
        if fault.get("function"):
            place = str(fault["function"]) + (f"+{fault['function_offset']}" if fault.get("function_offset") else "")
            if fault.get("object_path"):
                place += f" in {fault['object_path']}"
        return Rehearsed(
            vm=vm,
            host=str(raw["host"]),
            time=datetime.fromisoformat(str(raw["time"])),
            command=tuple(str(word) for word in raw["command"]),
            outcome=str(raw["outcome"]),
            reason=str(raw["reason"]),
            fault=place,
            instruction=str(fault["instruction"]) if fault.get("instruction") else None,
            missing=tuple(str(m) for m in fault.get("missing") or ()),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInput(where, f"a rehearsal record is incomplete or malformed ({exc})") from None


def rehearsed_vms(policies: Path) -> set[str]:
    """The VMs with kept rehearsals (one directory listing: a fleet of thousands reads no more)."""
    directory = policies / REHEARSALS_DIR
    return {path.stem for path in directory.glob("*.json")} if directory.is_dir() else set()


def latest(policies: Path, vm: str, host: str | None = None) -> list[Rehearsed]:
    """The kept rehearsals of ``vm`` (on ``host``), newest first."""
    path = evidence_path(policies, vm)
    found = [_evidence(vm, raw, path) for raw in _read(path)]
    if host is not None:
        found = [e for e in found if e.host == host]
    return sorted(found, key=lambda e: e.time, reverse=True)


def record_rehearsals(
    rehearsals: Sequence[Rehearsal],
    policies: Path | None,
    log: Path | None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[str]:
    """Keep and log ``rehearsals``; what could not be done, one line each (never fatal: the
    rehearsal's answer stands)."""
    when = now()
    problems = []
    if policies is not None:
        try:
            store(policies, rehearsals, when)
        except (BadInput, OSError) as exc:
            problems.append(f"rehearsal not kept for the reports: {exc}")
    if log is not None:
        try:
            append_log(log, rehearsals, when)
        except OSError as exc:
            problems.append(f"rehearsal not logged: {log}: {exc.strerror or exc}")
    return problems
