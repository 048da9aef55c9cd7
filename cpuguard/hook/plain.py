"""A :class:`~cpuguard.hook.context.HookContext` as plain data: what :mod:`cpuguard.hook.quick` decides with.

Built once per change of the hook's inputs (the slow path, with cpuguard's
core loaded) and kept by :mod:`cpuguard.hook.cache` as JSON. Everything that
does not depend on the domain XML is worked out here by the core itself: each
VM's policy needs with their origins (``requirements.build_requirements``
without a domain), where each VM runs and what a guest there sees
(``decision.source_host``, ``requirements.guest_visible``), this host's
facts and the texts of its warnings; and of cpuguard's knowledge what a
guest CPU definition can name (every cpu_map model's features, every
feature spelling).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.hook.context import HookContext
from cpuguard.hook.decision import Event, inventory_warnings, source_host
from cpuguard.hook.hostfacts import snapshot_time, stale_host
from cpuguard.levels import preload_level_table
from cpuguard.records import Move
from cpuguard.requirements import build_requirements, guest_visible


def plain_context(context: HookContext) -> dict[str, Any]:
    """Everything :func:`cpuguard.hook.quick.decide` reads, as JSON types."""
    preload_level_table(context.level_table)
    config, knowledge = context.config, context.knowledge
    vms: dict[str, dict[str, Any]] = {}
    for vm in sorted(set(context.policies) | set(context.vm_hosts)):
        policy = context.policies.get(vm)
        needs = build_requirements(vm, None, policy, Move.COLD, knowledge)
        try:
            where, note = source_host(Event(vm, "migrate", "migrate begin"), "host-passthrough", context)
        except BadInput:
            where, note, broken = None, None, True  # a live move of a host-dependent guest: the full path says why
        else:
            broken = False
        vms[vm] = {
            "needs": [[n.feature, n.origin.kind, n.origin.detail] for n in needs.needs],
            "notes": list(needs.notes),
            "unchecked": list(needs.unchecked),
            "mode": needs.mode,
            "policy": version(context, vm),
            "guest_scan": version(context, f"guest:{vm}"),
            "source_broken": broken,
            "source_note": note,
            "source": None
            if where is None
            else [where.name or where.source, sorted(guest_visible(where.flags, knowledge)), where.vendor],
        }
    return {
        "config": {
            "path": str(config.path) if config.path else None,
            "mode": config.mode,
            "on_error": dict(config.on_error),
            "audit_log": str(config.audit_log),
            "deadline": config.deadline_seconds,
            "host_name": config.host_name,
        },
        "host": _host(context),
        "inventory_warnings": inventory_warnings(context),
        "models": {name: sorted(model.features) for name, model in knowledge.cpu_map.models.items()},
        "spellings": dict(knowledge.vocabulary.by_key),
        "never": sorted(knowledge.vocabulary.never_needed),
        "vms": vms,
        # the guest scans' remarks in "vms" hold until then (cpuguard.hook.context.remarks_change)
        "expires_us": None if context.expires is None else _epoch_us(context.expires),
    }


def version(context: HookContext, key: str) -> dict[str, str] | None:
    found = context.policy_versions.get(key)
    return None if found is None else {"path": found.path, "sha256": found.sha256}


def _host(context: HookContext) -> dict[str, Any] | None:
    """This host's snapshot; None when there is none (the full path reads /proc/cpuinfo)."""
    facts, found = context.snapshot, context.snapshot_version
    if facts is None or found is None:
        return None
    captured = snapshot_time(facts, found)
    # the stale-snapshot warning around the boot time, which is read when deciding
    before, after = stale_host(facts, found, context.config, "\0").warnings[0].split("\0")
    return {
        "name": facts.name,
        "arch": facts.arch,
        "vendor": facts.vendor,
        "flags": sorted(facts.flags),
        "source": facts.source,
        "version": {"path": found.path, "sha256": found.sha256},
        "captured_at": facts.captured_at.isoformat() if facts.captured_at else None,
        "captured_us": _epoch_us(captured),
        "stale_warning": [before, after],
    }


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
