"""A hook decision from plain data: the domain XML's guest against the precompiled context.

Importing cpuguard's core (records, requirements, the verdict, the XML
parser) takes a hook process several times as long as libvirt's own CPU
comparison (docs/hook.md, "Speed"). The core has already done, in
:mod:`cpuguard.hook.plain`, all that does not depend on the domain XML; what
is left per call is the guest CPU definition's part of
``requirements.build_requirements``, then ``verdict.decide`` and the hook's
message and audit record (``cpuguard.hook.decision``), on sets and strings.
This module does that part for the guests it knows how to, and answers None
for any other (another architecture, a model or feature name cpuguard does
not know, an unknown mode or policy, a VM whose current host's facts are
broken, no snapshot): the full path decides those, and reports what is wrong.
tests/hook/test_hook_quick.py holds it to the full path's answers, byte for byte.
"""

from __future__ import annotations

from cpuguard import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy understands this form)
if TYPE_CHECKING:
    from typing import Any

    from cpuguard.hook.domainxml import Guest

X86_ARCHES = ("x86_64", "i686")
HOST_DEPENDENT_MODES = ("host-passthrough", "maximum", "host-model")
CPU_MODES = ("custom", "host-model", "host-passthrough", "maximum")
FEATURE_POLICIES = ("force", "require", "optional", "disable", "forbid")
_KIND_ORDER = {"binary": 0, "policy": 1, "level": 2, "guest-cpu": 3, "live": 4}
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_FEATURE_PREFIXES = ("hwcpux86", "x86feature")
TCG_NOTE = (
    "TCG guest (domain type 'qemu'): QEMU emulates its CPU, so the host's features matter less "
    "than for KVM; checked as if it were KVM"
)

Needs = list[tuple[str, str, str]]  # (feature, origin kind, origin detail)


class Answer:
    """What the hook says and logs: exit code, the one line for stderr ("" for none), the audit record."""

    def __init__(self, exit_code: int, message: str, record: dict[str, Any]) -> None:
        self.exit_code = exit_code
        self.message = message
        self.record = record


class _Declined(Exception):
    """Outside what this module decides: the full path does."""


def decide(
    plain: dict[str, Any],
    vm: str,
    operation: str,
    libvirt_call: str,
    guest: Guest | None,
    *,
    nodename: str,
    now: str,
    booted: int | None,
) -> Answer | None:
    """The decision for ``guest`` (:func:`cpuguard.hook.domainxml.read_guest`), or None for the full path.
    ``now`` is the record's time, ``booted`` ``btime`` of /proc/stat (None: unknown)."""
    host = plain["host"]
    if guest is None or host is None:
        return None
    try:
        return _decide(plain, vm, operation, libvirt_call, guest, host, nodename, now, booted)
    except _Declined:
        return None


def _decide(
    plain: dict[str, Any],
    vm: str,
    operation: str,
    libvirt_call: str,
    guest: Guest,
    host: dict[str, Any],
    nodename: str,
    now: str,
    booted: int | None,
) -> Answer:
    live = operation in ("migrate", "restore")
    entry = plain["vms"].get(vm) or {"needs": [], "notes": [], "unchecked": [], "mode": "enforce", "policy": None}
    cpu = _guest_cpu(plain, guest)
    mode = cpu[0]
    source, unknown_source = None, None
    if live and mode in HOST_DEPENDENT_MODES:  # decision.source_host
        if entry.get("source_broken"):
            raise _Declined  # deciding without its facts could allow what the guest cannot run: the full path errs
        source = entry.get("source")
        unknown_source = entry.get("source_note", f"the inventory does not say where {vm} runs")
    needs: Needs = [(n[0], n[1], n[2]) for n in entry["needs"]]
    notes, unchecked = list(entry["notes"]), list(entry["unchecked"])
    forbidden, vendor = _guest_needs(plain, vm, guest, cpu, live, source, needs, notes, unchecked)
    never = frozenset(plain["never"])
    needs = [n for n in needs if n[0] not in never]

    # verdict.decide
    flags = frozenset(host["flags"])
    missing = _group(n for n in needs if n[0] not in flags)
    present = _group(n for n in forbidden if n[0] in flags)
    problems = []
    if host["arch"] and not (guest.arch == host["arch"] or (guest.arch == "i686" and host["arch"] == "x86_64")):
        problems.append(f"architecture mismatch: the guest is {guest.arch}, the host {host['arch']}")
    if vendor[0] and host["vendor"] and vendor[0].lower() != host["vendor"].lower():
        problems.append(f"vendor mismatch: the guest needs a CPU by {vendor[0]}, the host's is by {host['vendor']}")
    elif vendor[0] and not host["vendor"] and vendor[1] == "guest-cpu":
        problems.append(
            f"vendor unknown: the guest CPU definition names {vendor[0]}, the host's CPU vendor is not known"
        )
    if vendor[0] and not host["vendor"] and vendor[1] != "guest-cpu":
        unchecked.append(
            f"vendor not checked: the running guest sees a CPU by {vendor[0]}, the host's CPU vendor is not known"
        )
    warnings: list[str] = []
    policy_mode = entry["mode"]
    if not missing and not present and not problems and unchecked:
        outcome = "warn"
        warnings.extend(unchecked)
    elif not missing and not present and not problems:
        outcome = "allow"
    elif problems:
        outcome = "block"
    elif policy_mode == "warn":
        outcome = "warn"
        warnings.append("policy mode is warn: the move is allowed, but the guest may fail")
    elif policy_mode == "off":
        outcome = "allow"
        notes.append("policy mode is off: missing features reported but not enforced")
    else:
        outcome = "block"
    if outcome != "warn" or not set(unchecked) <= set(warnings):
        notes.extend(unchecked)

    # decision.decide_event and decision._result
    if unknown_source:
        notes.append(unknown_source)
    config = plain["config"]
    if outcome == "block" and config["mode"] == "warn":
        outcome = "warn"
        warnings.append("config mode is warn: allowed, but the guest may fail")
    name = config["host_name"] or host["name"] or nodename
    stale = booted is not None and host["captured_us"] < booted * 1_000_000
    local_warnings = [_boot_warning(host["stale_warning"], booted)] if stale else []
    inventory = plain["inventory_warnings"]
    move = "live" if live else "cold"
    extra = [*local_warnings, *inventory, *warnings, *(f"note: {n}" for n in notes)]
    if outcome == "allow" and not extra:
        message = ""
    else:
        line = _one_line(outcome, vm, name or host["source"], move, problems, missing, present)
        message = "; ".join([line, *extra])
    record = {
        "time": now,
        "host": name or host["source"],
        "vm": vm,
        "operation": operation,
        "event": libvirt_call,
        "move": move,
        "verdict": outcome,
        "decision": "block" if outcome == "block" else "allow",
        "mode": config["mode"],
        "missing": _missing_record(missing),
        "forbidden_present": _missing_record(present),
        "problems": problems,
        "warnings": [*local_warnings, *inventory, *warnings],
        "notes": notes,
        "error": None,
        "message": message,
        "policy": entry["policy"],
        "guest_scan": entry.get("guest_scan"),
        "snapshot": {**host["version"], "captured_at": host["captured_at"], "stale": stale},
        "config": config["path"],
        "cpuguard_version": __version__,
        "pid": None,
        "caller": None,
        "decided_in": None,
        "elapsed_ms": None,
    }
    return Answer(1 if outcome == "block" else 0, message, record)


def _guest_cpu(plain: dict[str, Any], guest: Guest) -> tuple[str, str | None, str | None, dict[str, set[str]]]:
    """domain.parse_domain's GuestCpu: mode, model (canonical), vendor, features by policy (canonical)."""
    if guest.arch not in X86_ARCHES or not guest.name:
        raise _Declined
    by_policy: dict[str, set[str]] = {p: set() for p in FEATURE_POLICIES}
    if guest.cpu is None:
        return "default", "qemu64", None, by_policy
    mode = guest.cpu.mode
    if mode not in CPU_MODES:
        raise _Declined
    model = _model_name(plain, guest.cpu.model) if guest.cpu.model else None
    for fname, policy in guest.cpu.features:
        if policy not in FEATURE_POLICIES:
            raise _Declined
        by_policy[policy].add(_feature_name(plain, fname))
    if mode == "custom" and not model and not any(by_policy.values()):
        mode, model = "default", "qemu64"
    return mode, model, guest.cpu.vendor or None, by_policy


def _model_name(plain: dict[str, Any], name: str) -> str:
    """cpumodels.CpuMap.find's name (case ignored); a model cpuguard does not know is the full path's."""
    models: dict[str, list[str]] = plain["models"]
    if name in models:
        return name
    lowered = {m.lower(): m for m in models}
    if name.lower() not in lowered:
        raise _Declined
    return lowered[name.lower()]


def _feature_name(plain: dict[str, Any], name: str) -> str:
    """vocabulary.Vocabulary.try_canonical (through vocabulary.match_key); unknown: the full path's."""
    key = "".join(c for c in name.lower() if c in _ALNUM)
    for prefix in _FEATURE_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            key = key[len(prefix) :]
            break
    canonical: str | None = plain["spellings"].get(key)
    if canonical is None:
        raise _Declined
    return canonical


def _guest_needs(
    plain: dict[str, Any],
    vm: str,
    guest: Guest,
    cpu: tuple[str, str | None, str | None, dict[str, set[str]]],
    live: bool,
    source: list[Any] | None,
    needs: Needs,
    notes: list[str],
    unchecked: list[str],
) -> tuple[Needs, tuple[str | None, str | None]]:
    """requirements.build_requirements' part for the domain (x86): adds to ``needs``, ``notes`` and
    ``unchecked``; returns the forbidden features and the vendor with its origin."""
    mode, model, cpu_vendor, by_policy = cpu
    where = f"domain XML libvirt:{vm}"
    required = by_policy["require"] | by_policy["force"]
    optional, disabled = by_policy["optional"], by_policy["disable"]
    vendor: tuple[str | None, str | None] = (None, None)
    if mode == "custom" and model:
        needs += _model_needs(plain, model, disabled | optional, f"guest CPU model {model} ({where})", "guest-cpu")
    if cpu_vendor and mode == "custom":
        vendor = (cpu_vendor, "guest-cpu")
    detail = f"features required by the guest CPU definition ({where})"
    needs += [(f, "guest-cpu", detail) for f in sorted(required)]
    detail = f"feature forbidden by the guest CPU definition ({where})"
    forbidden = [(f, "guest-cpu", detail) for f in sorted(by_policy["forbid"])]
    # mode "default" with a current host: never here (decision.source_host gives none for it)
    if live and mode == "host-model" and model:
        detail = f"the running guest sees it now (host-model expanded to {model}, {where})"
        needs += _model_needs(plain, model, disabled, detail, "live")
    elif live and mode in HOST_DEPENDENT_MODES:
        if source is None:
            unchecked.append(
                f"live rule only partly applied: {mode} guest and its current host is unknown, "
                "so the features it sees now could not be checked"
            )
        else:
            display, visible, source_vendor = source
            detail = f"the running guest sees it now ({mode} on {display})"
            needs += [(f, "live", detail) for f in sorted(set(visible) - disabled)]
            if source_vendor and not vendor[0]:
                vendor = (source_vendor, "live")
    if live and mode == "custom" and optional:  # no current host for a custom model (decision.source_host)
        unchecked.append(
            "live rule only partly applied: the guest CPU has optional features and its current host "
            "is unknown, so whether the running guest has them could not be checked"
        )
    if guest.virt_type == "qemu":
        notes.append(TCG_NOTE)
    return forbidden, vendor


def _model_needs(plain: dict[str, Any], model: str, dropped: set[str], detail: str, kind: str) -> Needs:
    return [(f, kind, detail) for f in plain["models"][model] if f not in dropped]


def _group(needs: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """verdict._group: by feature, sorted; each with its origins (kind, detail), sorted."""
    by_feature: dict[str, set[tuple[str, str]]] = {}
    for feature, kind, detail in needs:
        by_feature.setdefault(feature, set()).add((kind, detail))
    return [(f, sorted(by_feature[f])) for f in sorted(by_feature)]


def _missing_record(items: list[tuple[str, list[tuple[str, str]]]]) -> list[dict[str, Any]]:
    return [{"feature": feature, "needed_by": [detail for _, detail in origins]} for feature, origins in items]


def _one_line(
    outcome: str,
    vm: str,
    host: str,
    move: str,
    problems: list[str],
    missing: list[tuple[str, list[tuple[str, str]]]],
    present: list[tuple[str, list[tuple[str, str]]]],
) -> str:
    """render.verdict_text.one_line (a hook verdict has no hints)."""
    parts = list(problems)
    if missing:
        groups: dict[tuple[str, str], list[str]] = {}
        for feature, origins in missing:
            for origin in origins:
                groups.setdefault(origin, []).append(feature)
        ordered = sorted(groups.items(), key=lambda kv: (_KIND_ORDER.get(kv[0][0], 9), kv[1][0], kv[0][1]))
        parts.append("missing " + "; ".join(f"{', '.join(feats)} ({origin[1]})" for origin, feats in ordered))
    if present:
        parts.append("host has forbidden " + ", ".join(feature for feature, _ in present))
    head = f"cpuguard: {outcome.upper()} {vm} on {host} ({move})"
    return head + (": " + "; ".join(parts) if parts else "")


def _boot_warning(pieces: list[str], booted: int | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(booted)).join(pieces)
