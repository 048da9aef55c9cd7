"""The whole VM x host compatibility matrix, fast enough for 10,000 VMs x 1,000 hosts.

Fleets repeat themselves: hosts come in a few hardware generations, VMs in a
few CPU definitions. So the matrix is computed between *classes*: hosts with
identical (architecture, vendor, features), and requirements with identical
(architecture, vendor, needed features, forbidden features). Each class pair
is compared once, as bitsets. The requirements themselves come from
``requirements.build_requirements``, built once per group of VMs with the
same CPU definition, policy and current host; the test suite checks on random
fleets that every cell agrees with ``verdict.decide`` / ``verdict.accepts``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

from cpuguard.advice.advise import hosts_after
from cpuguard.knowledge import Knowledge
from cpuguard.levels import highest_level
from cpuguard.planning.bitset import FeatureIndex, indexes
from cpuguard.planning.records import Problem, VmSpec
from cpuguard.policy import VmPolicy
from cpuguard.records import HostFacts, Move, Requirements
from cpuguard.requirements import build_requirements
from cpuguard.verdict import decide, vm_level

MOVES = (Move.LIVE, Move.COLD)


@dataclass(frozen=True)
class HostClass:
    index: int
    arch: str
    vendor: str
    flags: frozenset[str]
    hosts: tuple[str, ...]
    level: str | None


@dataclass(frozen=True)
class NeedClass:
    index: int
    move: Move
    arch: str
    vendor: str | None
    features: frozenset[str]
    forbidden: frozenset[str]
    vms: tuple[str, ...]
    level: str | None


@dataclass(frozen=True)
class ClassCell:
    missing: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.missing and not self.forbidden and not self.problems


OK = ClassCell()


class _Cells(Mapping[tuple[int, int], ClassCell]):
    """(need class, host class) -> cell, for the pairs that do not fit only.

    Holds the bitsets and turns them into sorted feature names when a cell is
    looked at: a summary of 10,000 VMs never needs the names of most cells.
    """

    def __init__(self, index: FeatureIndex) -> None:
        self._index = index
        self._raw: dict[tuple[int, int], tuple[int, int, tuple[str, ...]]] = {}
        self._done: dict[tuple[int, int], ClassCell] = {}

    def add(self, key: tuple[int, int], lacking: int, present: int, problems: tuple[str, ...]) -> None:
        self._raw[key] = (lacking, present, problems)

    def __getitem__(self, key: tuple[int, int]) -> ClassCell:
        cell = self._done.get(key)
        if cell is None:
            lacking, present, problems = self._raw[key]
            cell = self._done[key] = ClassCell(self._index.names(lacking), self._index.names(present), problems)
        return cell

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


@dataclass(frozen=True)
class MatrixVm:
    name: str
    host: str | None
    live: int  # NeedClass index
    cold: int
    live_targets: int  # other hosts that can take it by a live move
    cold_targets: int
    mode: str = "enforce"
    notes: tuple[str, ...] = ()

    def need_class(self, move: Move) -> int:
        return self.live if move is Move.LIVE else self.cold

    def targets(self, move: Move) -> int:
        return self.live_targets if move is Move.LIVE else self.cold_targets


@dataclass(frozen=True)
class Matrix:
    hosts: tuple[str, ...]  # columns
    host_class: tuple[int, ...]  # per column
    host_classes: tuple[HostClass, ...]
    need_classes: tuple[NeedClass, ...]
    vms: tuple[MatrixVm, ...]  # rows, by name
    cells: Mapping[tuple[int, int], ClassCell]  # (need class, host class) -> cell; absent means OK
    accepted: tuple[int, ...]  # per need class: bit i set when hosts[i] accepts it
    problems: tuple[Problem, ...] = ()
    # stranded VM -> "configuration" (the <cpu> cpuguard advise gives opens a host) or "workload"
    stranded_by: Mapping[str, str] = field(default_factory=dict)

    def cell(self, vm: MatrixVm, host_index: int, move: Move) -> ClassCell:
        return self.cells.get((vm.need_class(move), self.host_class[host_index]), OK)

    def targets(self, vm: MatrixVm, move: Move) -> tuple[str, ...]:
        """The hosts other than its current one that accept ``vm`` by ``move``."""
        return tuple(self.hosts[i] for i in indexes(self.accepted[vm.need_class(move)]) if self.hosts[i] != vm.host)

    @property
    def stranded(self) -> tuple[MatrixVm, ...]:
        """VMs no other host can take by a live move."""
        return tuple(v for v in self.vms if v.live_targets == 0)

    @property
    def complete(self) -> bool:
        return not self.problems


def _policy_key(policy: VmPolicy | None) -> object:
    """What of a policy ``build_requirements`` reads (not its file name)."""
    if policy is None:
        return None
    binaries = tuple((tuple(f.feature for f in b.required), b.level) for b in policy.binaries)
    guest = policy.guest
    scanned = None
    if guest is not None:
        floor = guest.os_need.level if guest.os_need else None
        scanned = (floor, frozenset(use.feature for b in guest.binaries for use in b.required))
    return (policy.mode, policy.level, policy.features, policy.model_features, binaries, scanned)


@dataclass(frozen=True)
class _Needs:
    """The part of a VM's requirements the matrix compares (no provenance)."""

    arch: str
    vendor: str | None
    vendor_origin: str | None
    features: frozenset[str]
    forbidden: frozenset[str]
    mode: str
    notes: tuple[str, ...]


class _RequirementCache:
    """Requirements per VM, built with ``build_requirements`` but not once per VM.

    ``build_requirements`` adds the policy's needs to those of the domain
    definition (and, for a live move, of the current host), and only the
    latter decide architecture, vendor, forbidden features and notes. So the
    two parts are built separately, each once per distinct input -- the domain
    part per (CPU definition, current host's CPU), the policy part per policy
    content -- and joined by set union. The tests check on random fleets that
    this equals ``build_requirements`` of the whole VM, cell by cell.
    """

    def __init__(self, hosts: Mapping[str, HostFacts], knowledge: Knowledge) -> None:
        self.hosts = hosts
        self.knowledge = knowledge
        self.domain_part: dict[tuple[object, ...], tuple[Requirements, frozenset[str], frozenset[str]]] = {}
        self.policy_part: dict[tuple[object, ...], frozenset[str]] = {}
        self.joined: dict[tuple[object, ...], _Needs] = {}

    def needs(self, vm: VmSpec, move: Move) -> _Needs:
        source = self.hosts.get(vm.host) if vm.host else None
        domain = vm.domain
        domain_key = (
            move,
            (domain.arch, domain.cpu) if domain else None,
            (source.arch, source.vendor, source.flags) if source else None,
        )
        policy_key = (move, _policy_key(vm.policy))
        joined = self.joined.get((domain_key, policy_key))
        if joined is not None:
            return joined
        part = self.domain_part.get(domain_key)
        if part is None:
            req = build_requirements(vm.name, domain, None, move, self.knowledge, source_host=source)
            part = self.domain_part[domain_key] = (req, req.features, frozenset(n.feature for n in req.forbidden))
        base, base_features, forbidden = part
        workload = self.policy_part.get(policy_key)
        if workload is None:
            workload = frozenset()
            if vm.policy is not None:
                workload = build_requirements(vm.name, None, vm.policy, move, self.knowledge).features
            self.policy_part[policy_key] = workload
        joined = _Needs(
            arch=base.arch,
            vendor=base.vendor,
            vendor_origin=base.vendor_origin,
            features=base_features | workload,
            forbidden=forbidden,
            mode=vm.policy.mode if vm.policy else "enforce",
            notes=base.notes,
        )
        self.joined[(domain_key, policy_key)] = joined
        return joined


@cache
def _problems(
    req_arch: str, req_vendor: str | None, vendor_origin: str | None, host_arch: str, host_vendor: str
) -> tuple[str, ...]:
    """Architecture / vendor problems, worded exactly as ``verdict.decide`` words them."""
    req = Requirements(vm="", arch=req_arch, move=Move.COLD, needs=(), vendor=req_vendor, vendor_origin=vendor_origin)
    host = HostFacts("", host_arch, host_vendor, "", frozenset(), "", "")
    return decide(req, host).problems


def compute_matrix(
    vms: Sequence[VmSpec],
    hosts: Mapping[str, HostFacts],
    knowledge: Knowledge,
    *,
    problems: Sequence[Problem] = (),
) -> Matrix:
    index = FeatureIndex()
    columns = tuple(sorted(hosts))
    column_of = {name: i for i, name in enumerate(columns)}

    host_keys: dict[tuple[str, str, frozenset[str]], int] = {}
    host_members: list[list[str]] = []
    host_class_of: list[int] = []
    for name in columns:
        facts = hosts[name]
        key = (facts.arch, facts.vendor, facts.flags)
        cls = host_keys.setdefault(key, len(host_keys))
        if cls == len(host_members):
            host_members.append([])
        host_members[cls].append(name)
        host_class_of.append(cls)
    host_classes = tuple(
        HostClass(i, arch, vendor, flags, tuple(host_members[i]), highest_level(flags))
        for (arch, vendor, flags), i in host_keys.items()
    )
    have = [index.mask(c.flags) for c in host_classes]
    columns_of_class = [0] * len(host_classes)
    for column, cls in enumerate(host_class_of):
        columns_of_class[cls] |= 1 << column

    NeedKey = tuple[Move, str, str | None, frozenset[str], frozenset[str], str | None]
    need_keys: dict[NeedKey, int] = {}
    need_members: list[list[str]] = []
    need_info: list[NeedKey] = []
    rows: list[MatrixVm] = []
    cache = _RequirementCache(hosts, knowledge)
    ordered = sorted(vms, key=lambda v: v.name)
    vm_classes: list[tuple[int, int]] = []
    vm_needs: list[_Needs] = []
    groups: dict[tuple[object, ...], tuple[int, int, _Needs]] = {}
    vm_groups: list[tuple[object, ...]] = []
    for vm in ordered:
        source = hosts.get(vm.host) if vm.host else None
        domain = vm.domain
        group_key = (
            (domain.arch, domain.cpu) if domain else None,
            (source.arch, source.vendor, source.flags) if source else None,
            _policy_key(vm.policy),
        )
        group = groups.get(group_key)
        if group is None:
            ids: list[int] = []
            for move in MOVES:
                needs = cache.needs(vm, move)
                need_key = (move, needs.arch, needs.vendor, needs.features, needs.forbidden, needs.vendor_origin)
                cls = need_keys.setdefault(need_key, len(need_keys))
                if cls == len(need_info):
                    need_info.append(need_key)
                    need_members.append([])
                ids.append(cls)
            group = groups[group_key] = (ids[0], ids[1], cache.needs(vm, Move.LIVE))
        live_class, cold_class, live_needs = group
        vm_groups.append(group_key)
        need_members[live_class].append(vm.name)
        need_members[cold_class].append(vm.name)
        vm_classes.append((live_class, cold_class))
        vm_needs.append(live_needs)

    cells = _Cells(index)
    accepted: list[int] = []
    for n, (_move, arch, vendor, features, forbidden, vendor_origin) in enumerate(need_info):
        need = index.mask(features)
        forbid = index.mask(forbidden)
        ok_columns = 0
        for h, hclass in enumerate(host_classes):
            lacking = need & ~have[h]
            present = forbid & have[h]
            trouble = _problems(arch, vendor, vendor_origin, hclass.arch, hclass.vendor)
            if lacking or present or trouble:
                cells.add((n, h), lacking, present, trouble)
            else:
                ok_columns |= columns_of_class[h]
        accepted.append(ok_columns)

    for vm, (live_class, cold_class), needs in zip(ordered, vm_classes, vm_needs, strict=True):
        own = 1 << column_of[vm.host] if vm.host in column_of else 0
        rows.append(
            MatrixVm(
                name=vm.name,
                host=vm.host,
                live=live_class,
                cold=cold_class,
                live_targets=(accepted[live_class] & ~own).bit_count(),
                cold_targets=(accepted[cold_class] & ~own).bit_count(),
                mode=needs.mode,
                notes=needs.notes,
            )
        )
    need_classes = tuple(
        NeedClass(i, move, arch, vendor, features, forbidden, tuple(need_members[i]), vm_level(features))
        for i, (move, arch, vendor, features, forbidden, _origin) in enumerate(need_info)
    )
    # Stranded VMs: would the <cpu> cpuguard advise gives open another host? Asked of one host per
    # class (identical CPUs), and once per group of VMs with the same definition, source and policy.
    reps = {c.hosts[0]: hosts[c.hosts[0]] for c in host_classes}
    size = {c.hosts[0]: len(c.hosts) for c in host_classes}
    rep_of = {name: host_classes[host_class_of[i]].hosts[0] for i, name in enumerate(columns)}
    after: dict[object, tuple[str, ...]] = {}
    reach_of: dict[tuple[object, ...], tuple[str, ...] | None] = {}
    causes: dict[str, str] = {}
    for vm, row, vm_group in zip(ordered, rows, vm_groups, strict=True):
        if row.live_targets != 0:
            continue
        if vm_group not in reach_of:
            source = hosts.get(vm.host) if vm.host else None
            reach_of[vm_group] = hosts_after(vm, reps, knowledge, after, current=source)
        reach = reach_of[vm_group]
        if reach is not None:
            others = sum(size[r] for r in reach) - (1 if rep_of.get(vm.host or "") in reach else 0)
            causes[vm.name] = "configuration" if others > 0 else "workload"
    return Matrix(
        hosts=columns,
        host_class=tuple(host_class_of),
        host_classes=host_classes,
        need_classes=need_classes,
        vms=tuple(rows),
        cells=cells,
        accepted=tuple(accepted),
        problems=tuple(sorted(set(problems))),
        stranded_by=causes,
    )
