"""``cpuguard hook status``: is the hook installed, would it work, and has libvirt run it?

libvirt gives no way to ask which hooks it loaded, so "live" is proven from
the audit log: a decision logged after the hook file was written, by a hook
whose parent process was a libvirt daemon.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpuguard.config import DEFAULT_CONFIG
from cpuguard.errors import CpuguardError
from cpuguard.hook import shim
from cpuguard.hook.install import DEFAULT_HOOKS_DIR, deadline_text, hook_path

#: Parent process names of a hook libvirt ran (``comm`` of the daemon).
LIBVIRT_DAEMONS = ("libvirtd", "virtqemud")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def last_libvirt_decision(audit_log: Path) -> dict[str, Any] | None:
    """The newest audit record written by a hook that libvirt ran."""
    from cpuguard.hook import audit

    last = None
    try:
        for record in audit.read(audit_log):
            if isinstance(record, dict) and record.get("caller") in LIBVIRT_DAEMONS:
                last = record
    except OSError:
        return None
    return last


def _parse_time(text: Any) -> datetime | None:
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def code_checks(settings: dict[str, str]) -> list[Check]:
    """The interpreter and python_path the shim runs: there, and changeable by root alone."""
    from cpuguard.hook.codetrust import code_problems

    python = settings.get("python", "")
    entries = [e for e in settings.get("python_path", "").split(os.pathsep) if e]
    if not python or not os.access(python, os.X_OK):
        interpreter = Check("interpreter", False, f"{python or '(none in the shim)'} is not an executable file")
        return [interpreter, Check("python_path", bool(entries), os.pathsep.join(entries) or "(none in the shim)")]
    problems = code_problems(python, entries)
    consequence = "; the hook runs it as root: install cpuguard where only root can write"
    mine = [p.removeprefix("interpreter ") for p in problems if p.startswith("interpreter ")]
    interpreter = Check("interpreter", not mine, mine[0] + consequence if mine else python)
    theirs = [p.removeprefix("python_path entry ") for p in problems if not p.startswith("interpreter ")]
    path = Check("python_path", not theirs, "; ".join(theirs) + consequence if theirs else os.pathsep.join(entries))
    return [interpreter, path]


def status(hooks_dir: Path = DEFAULT_HOOKS_DIR, config_path: Path | None = None) -> list[Check]:
    checks: list[Check] = []
    target = hook_path(hooks_dir)
    try:
        text = target.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        checks.append(Check("hook", False, f"{target}: not installed ({exc.strerror}); run 'cpuguard hook install'"))
        return checks
    if not shim.is_ours(text):
        checks.append(Check("hook", False, f"{target} is another tool's hook, not cpuguard's"))
        return checks
    executable = os.access(target, os.X_OK)
    checks.append(Check("hook", executable, f"{target}" + ("" if executable else " is not executable")))
    settings = shim.read_settings(text)
    checks += code_checks(settings)
    config_path = config_path or Path(settings.get("config") or DEFAULT_CONFIG)

    from cpuguard.hook.context import build_context

    try:
        context = build_context(config_path)
    except CpuguardError as exc:
        checks.append(Check("config", False, f"{exc}: the hook follows on_error until this is fixed"))
        return checks
    config = context.config
    where = config_path if config.path else f"{config_path} (absent: defaults)"
    if config.policies.is_dir():
        written = sum(1 for p in context.policies.values() if p.source)
        scans = sum(1 for p in context.policies.values() if p.guest is not None)
        detail = f"{where}: mode {config.mode}, {written} VM policies in {config.policies}"
        if scans:
            detail += f", {scans} guest scan{'s' if scans != 1 else ''}"
        checks.append(Check("config", True, detail))
    else:
        detail = (
            f"{where}: mode {config.mode}; its policies directory {config.policies} is missing: no VM policies "
            "and no inventory, so the hook checks only what each guest's CPU definition needs "
            "(create it, with vms/<vm>.yaml and inventory.yaml, or set policies:)"
        )
        checks.append(Check("config", False, detail))
    if context.broken_hosts:
        problems = "; ".join(f"{name}: {problem}" for name, problem in sorted(context.broken_hosts.items()))
        detail = (
            f"host facts that cannot be used: {problems} (a live move of a host-passthrough or host-model guest "
            "running there follows on_error; other decisions warn)"
        )
        checks.append(Check("inventory", False, detail))
    # The shim keeps on_error, audit_log and the deadline for before (or when) the config cannot be read.
    exits = {"block": "1", "allow": "0"}
    expected = {f"on_error_{op}": exits[action] for op, action in config.on_error.items()}
    expected["audit_log"] = str(config.audit_log)
    expected["deadline"] = deadline_text(config.deadline_seconds)
    differing = sorted(name for name, value in expected.items() if settings.get(name) != value)
    if differing:
        detail = f"the shim's {', '.join(differing)} differ from {config_path}: run 'cpuguard hook install' again"
        checks.append(Check("shim", False, detail))

    from cpuguard.hook.hostfacts import boot_time, snapshot_time

    if context.snapshot is None or context.snapshot_version is None:
        checks.append(Check("snapshot", False, f"{config.host_facts} missing: the hook falls back to /proc/cpuinfo"))
    else:
        captured = snapshot_time(context.snapshot, context.snapshot_version)
        booted = boot_time()
        stale = booted is not None and captured < booted
        note = " (older than the last boot: refresh it)" if stale else ""
        detail = f"{config.host_facts}, captured {captured:%Y-%m-%d %H:%M} UTC{note}"
        checks.append(Check("snapshot", not stale, detail))

    installed = datetime.fromtimestamp(target.stat().st_mtime, UTC)
    last = last_libvirt_decision(config.audit_log)
    when = _parse_time(last.get("time")) if last else None
    if last and when and when >= installed:
        detail = (
            f"libvirt ran it at {when:%Y-%m-%d %H:%M:%S} UTC: {last.get('vm')} {last.get('operation')} "
            f"-> {last.get('verdict')} ({config.audit_log})"
        )
        checks.append(Check("live", True, detail))
    else:
        checks.append(
            Check(
                "live",
                False,
                f"no decision by libvirt logged in {config.audit_log} since {installed:%Y-%m-%d %H:%M:%S} UTC; "
                "libvirt finds new hooks only when it starts or reloads (systemctl reload virtqemud or libvirtd), "
                "then runs it at the next VM start or incoming migration",
            )
        )
    return checks
