"""Plain records of ``cpuguard advise``: what a VM's CPU configuration costs it, and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cpuguard.records import Missing


class Standing(StrEnum):
    """What holds a VM where it is, in the order a reader must act on it."""

    NOT_GIVEN = "workload not given"  # its CPU definition lacks a feature its workload needs
    WORKLOAD = "stranded by the workload"  # no other host offers what its software needs
    CONFIGURATION = "pinned by configuration"  # the advised <cpu> opens hosts it cannot reach now
    FREE = "free"  # it already reaches every host its workload runs on


@dataclass(frozen=True)
class AdvisedCpu:
    """A guest CPU definition: a libvirt named model with features required and disabled on top."""

    model: str
    required: tuple[str, ...]  # canonical names
    disabled: tuple[str, ...]
    required_libvirt: tuple[str, ...]  # the same in libvirt's spelling, for the <cpu> element
    disabled_libvirt: tuple[str, ...]
    features: frozenset[str]  # canonical: what a guest booted with it gets
    level: str | None  # the x86-64 level ``features`` amount to

    @property
    def extra(self) -> int:
        return len(self.required) + len(self.disabled)


@dataclass(frozen=True)
class HostShortfall:
    """An inventory host that cannot run the VM's workload, and what it lacks."""

    host: str
    missing: tuple[Missing, ...]
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Advice:
    vm: str
    host: str | None  # where it runs now, if known
    mode: str | None  # current <cpu> mode; None without a domain definition
    model: str | None
    needs: tuple[Missing, ...]  # the workload's needs with their origins (feature order)
    workload_level: str | None
    not_given: tuple[Missing, ...]  # workload needs the current CPU definition does not give
    live_now: tuple[str, ...]
    cold_now: tuple[str, ...]
    workload_hosts: tuple[str, ...]  # hosts offering every workload need
    shortfalls: tuple[HostShortfall, ...]  # the other hosts, and what the workload misses there
    advised: AdvisedCpu | None
    live_after: tuple[str, ...]
    cold_after: tuple[str, ...]
    standing: Standing
    notes: tuple[str, ...] = ()

    @property
    def opened(self) -> tuple[str, ...]:
        """Hosts the advised definition reaches that the VM cannot reach now (live or cold)."""
        return tuple(sorted((set(self.live_after) - set(self.live_now)) | (set(self.cold_after) - set(self.cold_now))))
