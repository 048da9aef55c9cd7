"""Plain typed records that flow from sources to the decision to renderers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Move(StrEnum):
    """How a VM arrives on a host.

    LIVE: live migration or restore of a saved memory image: running
    processes keep the code paths they chose on the CPU they saw at boot.
    COLD: a fresh boot on the host (restart after a cold move, restore from
    a disk backup): only the workload and the guest CPU definition matter.
    """

    LIVE = "live"
    COLD = "cold"


class Outcome(StrEnum):
    ALLOW = "allow"
    WARN = "warn"
    BLOCK = "block"


@dataclass(frozen=True)
class HostFacts:
    """What one host CPU offers a guest, from any source, in canonical names."""

    name: str
    arch: str  # "x86_64", "aarch64", ...
    vendor: str  # libvirt vendor name: "Intel", "AMD", "Hygon" or "" if unknown
    model_name: str  # human model name ("Intel(R) Xeon(R) CPU X5650 @ 2.67GHz") or libvirt model
    flags: frozenset[str]
    source: str  # where the facts came from ("cpuinfo:/proc/cpuinfo", "model:Westmere", ...)
    kind: str  # cpuinfo | capabilities | domcapabilities | snapshot | libvirt | model | uarch | level
    captured_at: datetime | None = None
    libvirt_model: str | None = None  # host-model / capabilities <model>, when known
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, order=True)
class Origin:
    """Where a need comes from, for the explanation of a "no"."""

    kind: str  # policy | level | guest-cpu | binary | live
    detail: str  # e.g. "policies/vms/pbx01.yaml", "guest CPU model Skylake-Server"

    def describe(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Need:
    feature: str
    origin: Origin


@dataclass(frozen=True)
class GuestCpu:
    """The <cpu> of a domain definition, in canonical feature names."""

    mode: str  # custom | host-model | host-passthrough | maximum | default (no <cpu>)
    model: str | None = None
    vendor: str | None = None
    fallback: str | None = None
    check: str | None = None
    required: frozenset[str] = frozenset()  # policy require / force
    optional: frozenset[str] = frozenset()
    disabled: frozenset[str] = frozenset()  # policy disable
    forbidden: frozenset[str] = frozenset()  # policy forbid: host must NOT have it


@dataclass(frozen=True)
class Domain:
    name: str
    arch: str
    virt_type: str
    cpu: GuestCpu
    source: str


@dataclass(frozen=True)
class Requirements:
    """Everything a VM needs from a destination host for one kind of move."""

    vm: str
    arch: str
    move: Move
    needs: tuple[Need, ...]
    forbidden: tuple[Need, ...] = ()
    vendor: str | None = None  # a guest definition pinned to a vendor
    mode: str = "enforce"  # enforce | warn | off (from the VM's policy)
    notes: tuple[str, ...] = ()  # e.g. "source host unknown: live rule partly applied"
    subject: str = "vm"  # vm | binaries (what `vm` names)
    policy: str | None = None  # the policy file that applied, if any
    current_host: str | None = None  # where the VM runs now, if known
    unchecked: tuple[str, ...] = ()  # what could not be checked: an allow becomes a warn
    vendor_origin: str | None = None  # guest-cpu (<vendor> in the definition) | live (the current host's)

    @property
    def features(self) -> frozenset[str]:
        return frozenset(n.feature for n in self.needs)


@dataclass(frozen=True)
class Missing:
    feature: str
    origins: tuple[Origin, ...]


@dataclass(frozen=True)
class Rehearsed:
    """A kept rehearsal of a VM on a host (``cpuguard rehearse``): the evidence a report shows."""

    vm: str
    host: str
    time: datetime
    command: tuple[str, ...]
    outcome: str  # passed | failed-cpu | failed-other | cannot-rehearse
    reason: str
    fault: str | None = None  # where it faulted: "main+352 in /usr/sbin/asterisk"
    instruction: str | None = None
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    vm: str
    host: str
    move: Move
    outcome: Outcome
    missing: tuple[Missing, ...] = ()
    forbidden_present: tuple[Missing, ...] = ()
    problems: tuple[str, ...] = ()  # architecture / vendor mismatch and other blockers
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    vm_level: str | None = None  # the x86-64 level the VM's needs amount to
    host_level: str | None = None
    hints: tuple[str, ...] = ()  # other hosts that would accept the VM
    host_source: str = ""
    policy_mode: str = "enforce"
    subject: str = "vm"  # vm | binaries
    policy: str | None = None
    current_host: str | None = None
    blocked: tuple[str, ...] = ()  # subject binaries: those that cannot run there (sorted paths)
    rehearsals: tuple[Rehearsed, ...] = ()  # the latest of each command on this host, newest first

    @property
    def allowed(self) -> bool:
        return self.outcome is not Outcome.BLOCK
