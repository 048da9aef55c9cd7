"""Monitoring figures for Prometheus (node_exporter's textfile collector). Pure.

The point is an alert the day a VM loses its last safe target -- when a host
is retired, a VM is reconfigured, or a policy gains a feature -- not during
the outage. Figures per VM: how many other hosts could take it live and
cold; per host: its x86-64 level and how old its facts are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cpuguard.levels import LEVEL_NAMES
from cpuguard.planning.matrix import Matrix
from cpuguard.planning.records import Problem


@dataclass(frozen=True)
class VmFigures:
    vm: str
    host: str
    live_targets: int
    cold_targets: int
    mode: str
    targets_after: int | None = None  # other hosts once booted with the advised <cpu> (cpuguard advise)


@dataclass(frozen=True)
class HostFigures:
    host: str
    readable: bool
    level: int | None  # 1..4 for x86-64-v1..v4, 0 below v1, None when unreadable
    age_seconds: float | None  # None when the facts carry no date


@dataclass(frozen=True)
class FleetFigures:
    vms: tuple[VmFigures, ...]
    hosts: tuple[HostFigures, ...]
    problems: tuple[Problem, ...]
    generated: datetime
    guest_scan_ages: tuple[tuple[str, float], ...] = ()  # (vm, seconds) of stored guest scans

    @property
    def stranded(self) -> int:
        return sum(1 for v in self.vms if v.live_targets == 0)


def _others(hosts: tuple[str, ...] | None, current: str | None) -> int | None:
    return None if hosts is None else sum(1 for h in hosts if h != current)


def level_number(level: str | None) -> int:
    return LEVEL_NAMES.index(level) + 1 if level in LEVEL_NAMES else 0


def fleet_figures(
    matrix: Matrix,
    host_names: list[str],
    captured: Mapping[str, datetime | None],
    now: datetime,
    guest_scanned: Mapping[str, datetime] | None = None,
    after: Mapping[str, tuple[str, ...] | None] | None = None,
) -> FleetFigures:
    """``host_names``: every inventory host, readable or not; ``captured``: when each
    readable host's facts were taken (snapshot date, else the file's modification time);
    ``guest_scanned``: when each VM's stored guest scan was made; ``after``: the hosts each VM could
    reach once booted with the advised <cpu> (``advice.advise.hosts_after``)."""
    levels = {name: matrix.host_classes[matrix.host_class[i]].level for i, name in enumerate(matrix.hosts)}
    hosts = []
    for name in sorted(host_names):
        when = captured.get(name)
        hosts.append(
            HostFigures(
                host=name,
                readable=name in levels,
                level=level_number(levels[name]) if name in levels else None,
                age_seconds=max(0.0, (now - when).total_seconds()) if when else None,
            )
        )
    reach = after or {}
    vms = tuple(
        VmFigures(v.name, v.host or "", v.live_targets, v.cold_targets, v.mode, _others(reach.get(v.name), v.host))
        for v in matrix.vms
    )
    ages = tuple((vm, max(0.0, (now - when).total_seconds())) for vm, when in sorted((guest_scanned or {}).items()))
    return FleetFigures(vms, tuple(hosts), matrix.problems, now, ages)
