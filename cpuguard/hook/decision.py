"""One hook decision: from an event, the domain XML and the host's facts to an exit code,
a one-line message and an audit record, by cpuguard's core. No I/O: :mod:`cpuguard.hook.entry`
gathers and writes. The hook's quick path (:mod:`cpuguard.hook.quick`) gives the same answers from
plain data for the guests it knows how to decide; this is the full path, and its reference.

The decision itself is the core's (``requirements.build_requirements`` and
``verdict.decide``); this module adds what only the hook knows: where a
host-passthrough guest runs now (from the inventory), the configured ``mode``
and ``on_error``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cpuguard import __version__
from cpuguard.config import DEFAULT_ON_ERROR
from cpuguard.errors import BadInput
from cpuguard.hook.context import FileVersion, HookContext
from cpuguard.hook.hostfacts import LocalHost
from cpuguard.records import HostFacts, Missing, Move, Outcome, Verdict

#: Guest CPU modes whose current features depend on the host the guest runs on.
HOST_DEPENDENT_MODES = ("host-passthrough", "maximum", "host-model")

EXIT_ALLOW = 0
EXIT_BLOCK = 1

_WHAT = {"migrate": "live migration here", "restore": "restore of its memory image here", "start": "start here"}
_KEEPS = {
    "migrate": "the VM keeps running on its source host",
    "restore": "the saved image stays where it is",
    "start": "the VM stays shut off",
}


@dataclass(frozen=True)
class Event:
    vm: str
    operation: str  # migrate | restore | start
    libvirt: str  # the libvirt call, e.g. "migrate begin"

    @property
    def move(self) -> Move:
        return Move.LIVE if self.operation in ("migrate", "restore") else Move.COLD


@dataclass(frozen=True)
class HookResult:
    exit_code: int
    message: str  # one line for stderr; "" when there is nothing to say
    record: dict[str, Any]  # the audit log line


def _version(version: FileVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"path": version.path, "sha256": version.sha256}


def _missing(items: tuple[Missing, ...]) -> list[dict[str, Any]]:
    return [{"feature": m.feature, "needed_by": [o.detail for o in m.origins]} for m in items]


def base_record(event: Event, host: str, now: datetime, config_path: str | None) -> dict[str, Any]:
    return {
        "time": now.isoformat(timespec="milliseconds"),
        "host": host,
        "vm": event.vm,
        "operation": event.operation,
        "event": event.libvirt,
        "move": event.move.value,
        "verdict": None,
        "decision": None,
        "mode": None,
        "missing": [],
        "forbidden_present": [],
        "problems": [],
        "warnings": [],
        "notes": [],
        "error": None,
        "message": "",
        "policy": None,
        "guest_scan": None,
        "snapshot": None,
        "config": config_path,
        "cpuguard_version": __version__,
        "pid": None,
        "caller": None,
        "decided_in": None,
        "elapsed_ms": None,
    }


def source_host(event: Event, cpu_mode: str, context: HookContext) -> tuple[HostFacts | None, str | None]:
    """Where a host-dependent guest runs now, from the inventory, and a note when that is unknown."""
    if event.move is not Move.LIVE or cpu_mode not in HOST_DEPENDENT_MODES:
        return None, None
    where = context.vm_hosts.get(event.vm)
    if where is None:
        return None, f"the inventory does not say where {event.vm} runs"
    if where in context.unreadable_hosts:
        return None, f"{event.vm} runs on {where} (inventory), but {context.unreadable_hosts[where]}"
    if where in context.broken_hosts:
        # The live rule needs this host's facts: deciding without them could allow what the guest cannot
        # run, so cpuguard cannot decide (on_error).
        problem = context.broken_hosts[where]
        raise BadInput(None, f"{event.vm} runs on {where} (inventory), whose facts cannot be used: {problem}")
    return context.inventory_hosts.get(where), None


def inventory_warnings(context: HookContext) -> list[str]:
    """Inventory host files that could not be read (a decision that needs one fails in source_host)."""
    return [f"inventory host {name} ignored (not needed here): {p}" for name, p in sorted(context.broken_hosts.items())]


def decide_event(event: Event, domain_xml: bytes, context: HookContext, local: LocalHost, now: datetime) -> HookResult:
    from cpuguard.domain import parse_domain
    from cpuguard.levels import preload_level_table
    from cpuguard.requirements import build_requirements
    from cpuguard.verdict import decide

    preload_level_table(context.level_table)
    knowledge = context.knowledge
    domain = parse_domain(domain_xml, f"libvirt:{event.vm}", knowledge)
    policy = context.policies.get(event.vm)
    source, unknown_source = source_host(event, domain.cpu.mode, context)
    requirements = build_requirements(event.vm, domain, policy, event.move, knowledge, source_host=source)
    verdict = decide(requirements, local.facts)
    notes = list(verdict.notes)
    if unknown_source:
        notes.append(unknown_source)
    mode = context.config.mode
    if verdict.outcome is Outcome.BLOCK and mode == "warn":
        verdict = replace(
            verdict,
            outcome=Outcome.WARN,
            warnings=(*verdict.warnings, "config mode is warn: allowed, but the guest may fail"),
        )
    verdict = replace(verdict, notes=tuple(notes))
    return _result(event, verdict, context, local, now)


def _result(event: Event, verdict: Verdict, context: HookContext, local: LocalHost, now: datetime) -> HookResult:
    """What the hook says and logs for ``verdict``."""
    mode = context.config.mode
    inventory = inventory_warnings(context)
    message = _message(verdict, local, inventory)
    record = base_record(event, verdict.host, now, str(context.config.path) if context.config.path else None)
    record.update(
        verdict=verdict.outcome.value,
        decision="block" if verdict.outcome is Outcome.BLOCK else "allow",
        mode=mode,
        missing=_missing(verdict.missing),
        forbidden_present=_missing(verdict.forbidden_present),
        problems=list(verdict.problems),
        warnings=[*local.warnings, *inventory, *verdict.warnings],
        notes=list(verdict.notes),
        message=message,
        policy=_version(context.policy_versions.get(event.vm)),
        guest_scan=_version(context.policy_versions.get(f"guest:{event.vm}")),
        snapshot=_snapshot_record(local),
    )
    code = EXIT_BLOCK if verdict.outcome is Outcome.BLOCK else EXIT_ALLOW
    return HookResult(code, message, record)


def _snapshot_record(local: LocalHost) -> dict[str, Any]:
    if local.version is None:
        return {"source": local.facts.source}
    captured = local.facts.captured_at.isoformat() if local.facts.captured_at else None
    return {**(_version(local.version) or {}), "captured_at": captured, "stale": local.stale}


def _message(verdict: Verdict, local: LocalHost, inventory: list[str]) -> str:
    """The one line libvirt hands back to whoever asked for the move (empty for a quiet allow)."""
    from cpuguard.render.verdict_text import one_line

    extra = [*local.warnings, *inventory, *verdict.warnings, *(f"note: {n}" for n in verdict.notes)]
    if verdict.outcome is Outcome.ALLOW and not extra:
        return ""
    line = one_line(verdict)
    return "; ".join([line, *extra]) if extra else line


def error_result(
    event: Event,
    problem: str,
    *,
    on_error: dict[str, str] | None,
    host: str,
    now: datetime,
    config_path: str | None,
) -> HookResult:
    """cpuguard could not decide: follow ``on_error`` (block a live move, allow a start, by default)."""
    action = (on_error or DEFAULT_ON_ERROR).get(event.operation, DEFAULT_ON_ERROR[event.operation])
    if action == "block":
        consequence = f"refusing the {_WHAT[event.operation]} ({_KEEPS[event.operation]})"
    else:
        consequence = f"allowing the {_WHAT[event.operation]} unchecked"
    message = (
        f"cpuguard: ERROR {event.vm} on {host} ({event.move.value}): could not decide: {problem}; "
        f"on_error for {event.operation} is {action}: {consequence}"
    )
    record = base_record(event, host, now, config_path)
    record.update(verdict="error", decision=action, error=problem, message=message)
    return HookResult(EXIT_BLOCK if action == "block" else EXIT_ALLOW, message, record)
