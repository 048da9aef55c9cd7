"""Plain records of the planning layer: inputs (a VM as the inventory knows it,
a problem with one item) and results (evacuation plans, baselines)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cpuguard.advice.records import AdvisedCpu
from cpuguard.policy import VmPolicy
from cpuguard.records import Domain, Missing, Move, Rehearsed, Verdict


@dataclass(frozen=True)
class ReportMeta:
    """What a report was made from and when, for the reader of a report file (renderers never read the
    clock or the files: the CLI fills this in). ``captured`` is the oldest and newest capture time of
    the hosts' facts, None when no host's facts carry one."""

    generated_at: datetime
    cpuguard_version: str
    inventory: str | None  # the inventory file; None when every host came from a source argument
    hosts: int
    vms: int
    captured: tuple[datetime, datetime] | None = None

    def items(self) -> list[tuple[str, str]]:
        """(what, value) in reading order, as every report format shows them."""
        items = [
            ("Generated", _utc(self.generated_at)),
            ("cpuguard version", self.cpuguard_version),
            ("Inventory", self.inventory or "none (hosts given on the command line)"),
            ("Hosts", str(self.hosts)),
            ("VMs", str(self.vms)),
        ]
        if self.captured is not None:
            oldest, newest = self.captured
            span = _utc(oldest) if oldest == newest else f"{_utc(oldest)} to {_utc(newest)}"
            items.append(("Host facts captured", span))
        return items


def _utc(when: datetime) -> str:
    from datetime import UTC

    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, order=True)
class Problem:
    """One item that could not be read or trusted; the rest of the plan goes on.

    ``kind`` is ``host``, ``vm`` or ``inventory``; ``name`` the host or VM
    name (the file name for inventory-wide problems); ``message`` one line.
    ``hosts`` are, for a VM problem, the hosts the VM is listed on (empty:
    unknown, so the problem concerns every host).
    """

    kind: str
    name: str
    message: str
    hosts: tuple[str, ...] = ()

    def concerns(self, host: str) -> bool:
        """Could this problem change a plan about ``host``?"""
        if self.kind == "host":
            return True  # an unreadable host may be the one a stranded VM needed
        return not self.hosts or host in self.hosts

    def describe(self) -> str:
        return f"{self.kind} {self.name}: {self.message}" if self.kind != "inventory" else self.message


@dataclass(frozen=True)
class VmSpec:
    """A VM as the inventory knows it: where it runs, its definition and policy."""

    name: str
    host: str | None
    domain: Domain | None
    policy: VmPolicy | None
    rehearsals: tuple[Rehearsed, ...] = ()  # kept rehearsals on any host (cpuguard rehearse)


@dataclass(frozen=True)
class Candidate:
    """One possible target host for one VM, judged by both rules."""

    host: str
    live: Verdict
    cold: Verdict

    def verdict(self, move: Move) -> Verdict:
        return self.live if move is Move.LIVE else self.cold


def is_safe(verdict: Verdict) -> bool:
    """Nothing missing, nothing forbidden present, no architecture/vendor problem.

    Stricter than ``verdict.allowed``: a VM whose policy mode is ``warn`` or
    ``off`` is *allowed* onto a host that lacks features, but that host is
    not a safe target for it. Nor is a host where a kept rehearsal failed on
    the CPU: the workload's own code was shown to stop there.
    """
    failed = any(r.outcome == "failed-cpu" for r in verdict.rehearsals)
    return not verdict.missing and not verdict.forbidden_present and not verdict.problems and not failed


@dataclass(frozen=True)
class VmPlan:
    vm: str
    source: str  # the host being evacuated
    move: Move  # the rule that decides which targets are safe
    candidates: tuple[Candidate, ...]  # safe targets first, then by name
    safe: tuple[str, ...]  # targets that are safe under ``move``
    cold_only: tuple[str, ...]  # live plans: targets safe only after a shutdown (cold move)
    notes: tuple[str, ...] = ()
    policy_mode: str = "enforce"
    level: str | None = None  # x86-64 level the VM's needs amount to under ``move``
    # a stranded VM: "configuration" (the advised <cpu> opens ``advised_targets``) or "workload"
    # (no target offers what its software needs: ``workload_missing``); None when not stranded
    stranded_by: str | None = None
    advised: AdvisedCpu | None = None
    advised_targets: tuple[str, ...] = ()
    workload_missing: tuple[Missing, ...] = ()
    # targets whose facts could not be read: any of them might take a VM no other target takes
    unread: tuple[str, ...] = ()

    @property
    def stranded(self) -> bool:
        """No safe target, and every possible target was read: certainly stranded."""
        return not self.safe and not self.unread

    @property
    def undecided(self) -> bool:
        """No safe target among the targets read, but some could not be read (``unread``): it is
        stranded only for want of facts, as far as cpuguard knows."""
        return not self.safe and bool(self.unread)


@dataclass(frozen=True)
class EvacuationPlan:
    host: str
    move: Move
    targets: tuple[str, ...]
    vms: tuple[VmPlan, ...]  # stranded VMs first, then by name
    problems: tuple[Problem, ...] = ()  # items that could change this plan
    source_level: str | None = None

    @property
    def stranded(self) -> tuple[VmPlan, ...]:
        """The VMs certainly stranded: no safe target, and every target was read."""
        return tuple(v for v in self.vms if v.stranded)

    @property
    def undecided(self) -> tuple[VmPlan, ...]:
        """The VMs with no safe target among the targets read, that an unread target might take."""
        return tuple(v for v in self.vms if v.undecided)

    @property
    def dropped(self) -> tuple[Problem, ...]:
        """The targets left out because their facts could not be read (and why)."""
        return tuple(p for p in self.problems if p.kind == "host" and p.name != self.host)

    def stranded_by(self, cause: str) -> tuple[VmPlan, ...]:
        """The stranded VMs whose cause is ``configuration`` or ``workload``."""
        return tuple(v for v in self.stranded if v.stranded_by == cause)

    @property
    def evacuable_after_reconfiguration(self) -> bool:
        """Some VM is stranded, and every stranded one only by its configuration: once each has
        booted with its advised <cpu>, the host can be emptied."""
        return (
            bool(self.stranded) and not self.undecided and all(v.stranded_by == "configuration" for v in self.stranded)
        )

    @property
    def complete(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Baseline:
    """What a guest CPU should look like to move freely between ``hosts``."""

    hosts: tuple[str, ...]
    arch: str
    vendor: str | None  # None when the hosts disagree (libvirt then refuses a vendor)
    vendors: tuple[str, ...]
    common: frozenset[str]  # canonical features every host offers
    guest_features: frozenset[str]  # of those, what a guest can be given and keep across a live move
    level: str | None
    model: str | None  # best libvirt named CPU model
    extra: tuple[str, ...]  # canonical, required on top of the model
    disabled: tuple[str, ...]  # canonical, model features to disable
    extra_libvirt: tuple[str, ...]  # the same in libvirt's spelling, for the <cpu> snippet
    disabled_libvirt: tuple[str, ...]
    held_back: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (hosts lacking them, features others have)
    notes: tuple[str, ...] = ()
    # canonical guest features neither in the model nor in ``extra``: KVM offers them on every host
    hypervisor_provided: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    # (canonical, libvirt) of the extra and disabled features whose names differ in the <cpu> XML
    libvirt_spelling: tuple[tuple[str, str], ...] = ()

    def spelled(self, feature: str) -> str:
        """``pclmulqdq (libvirt: pclmuldq)`` where the <cpu> XML spells a feature differently."""
        libvirt = dict(self.libvirt_spelling).get(feature)
        return f"{feature} (libvirt: {libvirt})" if libvirt else feature
