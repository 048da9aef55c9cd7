"""This host's facts for the hook: the snapshot, else /proc/cpuinfo; a stale snapshot is noticed.

The hook never asks libvirt (the daemon is waiting on it), so it relies on
the snapshot ``cpuguard host snapshot`` wrote. A snapshot taken before the
last boot may predate new microcode, kernel options or hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from cpuguard.config import Config
from cpuguard.errors import BadInput
from cpuguard.hook.context import FileVersion, HookContext
from cpuguard.records import HostFacts

PROC_CPUINFO = Path("/proc/cpuinfo")
PROC_STAT = Path("/proc/stat")
#: How the stale-snapshot warning writes times (strftime, UTC); cpuguard.hook.quick too.
BOOT_FORMAT = "%Y-%m-%d %H:%M"


@dataclass(frozen=True)
class LocalHost:
    facts: HostFacts
    version: FileVersion | None  # the snapshot used; None for /proc/cpuinfo
    stale: bool = False
    warnings: tuple[str, ...] = ()


def boot_time(proc_stat: Path = PROC_STAT) -> datetime | None:
    """When this machine booted (``btime`` in /proc/stat, see proc(5))."""
    try:
        with proc_stat.open("rb") as handle:
            for line in handle:
                if line.startswith(b"btime "):
                    return datetime.fromtimestamp(int(line.split()[1]), UTC)
    except (OSError, ValueError, IndexError):
        return None
    return None


def snapshot_time(facts: HostFacts, version: FileVersion) -> datetime:
    """When a snapshot was captured: its ``captured_at``, else the file's modification time."""
    if facts.captured_at is not None:
        captured = facts.captured_at
        return captured if captured.tzinfo else captured.replace(tzinfo=UTC)
    return datetime.fromtimestamp(version.mtime, UTC)


def stale_host(facts: HostFacts, version: FileVersion, config: Config, booted: str) -> LocalHost:
    """This host with a snapshot captured before the last boot, ``booted`` as :data:`BOOT_FORMAT` writes
    it (cpuguard.hook.plain cuts the warning there; cpuguard.hook.quick puts the boot time in)."""
    captured = snapshot_time(facts, version)
    warning = (
        f"host snapshot {config.host_facts} predates the last boot "
        f"({captured:{BOOT_FORMAT}} < {booted} UTC): {_refresh_hint(config)}"
    )
    return LocalHost(facts, version, stale=True, warnings=(warning,))


def _refresh_hint(config: Config) -> str:
    return f"refresh it with 'cpuguard host snapshot -o {config.host_facts}'"


def host_name(context: HookContext, nodename: str) -> str:
    """This host's name in messages: config ``host_name``, else the snapshot's, else the node name."""
    return context.config.host_name or (context.snapshot.name if context.snapshot else "") or nodename


def local_host(
    context: HookContext,
    *,
    nodename: str,
    cpuinfo: Path = PROC_CPUINFO,
    proc_stat: Path = PROC_STAT,
) -> LocalHost:
    config = context.config
    name = host_name(context, nodename)
    if context.snapshot is not None and context.snapshot_version is not None:
        facts = replace(context.snapshot, name=name)
        booted = boot_time(proc_stat)
        captured = snapshot_time(facts, context.snapshot_version)
        if booted is not None and captured < booted:
            return stale_host(facts, context.snapshot_version, config, f"{booted:{BOOT_FORMAT}}")
        return LocalHost(facts, context.snapshot_version)

    from cpuguard.hosts.cpuinfo import parse_cpuinfo
    from cpuguard.xmlsafe import read_bytes

    try:
        text = read_bytes(cpuinfo, 16 * 1024 * 1024).decode("utf-8", "replace")
    except BadInput as exc:
        raise BadInput(config.host_facts, f"no host snapshot, and {exc}") from None
    facts = parse_cpuinfo(text, cpuinfo, context.knowledge.vocabulary, name=name)
    warning = (
        f"no host snapshot at {config.host_facts}; used {cpuinfo}, the kernel's view, "
        f"not what KVM offers guests: {_refresh_hint(config)}"
    )
    return LocalHost(facts, None, warnings=(warning,))
