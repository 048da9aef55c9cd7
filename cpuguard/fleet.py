"""Gather what a check needs from the world: the policies directory, the
inventory, host facts and VM definitions. All I/O of ``check`` lives here;
the decision itself (requirements.py, verdict.py) is pure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from cpuguard.config import DEFAULT_CONFIG, read_config
from cpuguard.domain import parse_domain, read_domain
from cpuguard.errors import BadInput, UnknownName
from cpuguard.guest.records import GuestNeeds
from cpuguard.guest.store import GUESTS_DIR
from cpuguard.hosts.sources import is_uri, looks_like_path, looks_like_source, resolve_host
from cpuguard.inventory import INVENTORY_NAME, Inventory, read_inventory
from cpuguard.knowledge import Knowledge
from cpuguard.libvirt_api import connect
from cpuguard.policy import VmPolicy, find_policy, read_policy, with_guest
from cpuguard.records import Domain, HostFacts, Move, Rehearsed, Requirements, Verdict
from cpuguard.requirements import build_requirements
from cpuguard.verdict import decide, with_rehearsals

if TYPE_CHECKING:
    from cpuguard.scan.records import FileScan

#: The example fleet shipped in the source tree (used when nothing else is configured).
EXAMPLE_POLICIES = Path(__file__).resolve().parents[1] / "policies"


def pretty_path(path: Path, cwd: Path | None = None) -> Path:
    """``path`` relative to the working directory when it lies below it (for messages)."""
    cwd = cwd or Path.cwd()
    try:
        return path.resolve().relative_to(cwd.resolve())
    except ValueError:
        return path


def find_policies_dir(
    explicit: Path | None,
    environ: Mapping[str, str] = os.environ,
    config_path: Path = DEFAULT_CONFIG,
    cwd: Path | None = None,
) -> Path:
    """--policies, else $CPUGUARD_POLICIES, else the config file's ``policies``,
    else ./policies, else the example fleet shipped with cpuguard."""
    return find_policies(explicit, environ, config_path, cwd)[0]


def find_policies(
    explicit: Path | None,
    environ: Mapping[str, str] = os.environ,
    config_path: Path = DEFAULT_CONFIG,
    cwd: Path | None = None,
) -> tuple[Path, bool]:
    """(policies directory, whether it is the example fleet used for want of any other)."""
    cwd = cwd or Path.cwd()
    if explicit is not None:
        if not explicit.is_dir():
            raise BadInput(explicit, "policies directory does not exist")
        return explicit, False
    if environ.get("CPUGUARD_POLICIES"):
        path = Path(environ["CPUGUARD_POLICIES"])
        if not path.is_dir():
            raise BadInput(path, "CPUGUARD_POLICIES: directory does not exist")
        return path, False
    if config_path.exists():
        return read_config(config_path).policies, False
    local = cwd / "policies"
    if (local / INVENTORY_NAME).exists() or (local / "vms").is_dir():
        return pretty_path(local, cwd), False
    if not (EXAMPLE_POLICIES / INVENTORY_NAME).exists():  # an installed wheel has no example fleet
        raise BadInput(
            None,
            f"no policies directory: give --policies DIR, set CPUGUARD_POLICIES, or set 'policies:' in {config_path}",
        )
    return pretty_path(EXAMPLE_POLICIES, cwd), True


def is_example_fleet(policies_dir: Path) -> bool:
    return policies_dir.resolve() == EXAMPLE_POLICIES.resolve()


def guest_scan_dirs(policies: Path, inventory_file: Path | None) -> list[Path]:
    """Where stored guest scans (``<vm>.json``) are read from: ``POLICIES/guests/``, written by
    ``inventory scan-guests``, and ``guests/`` beside an inventory kept elsewhere
    (``--inventory DIR``: results fetched from the hypervisors, as examples/ansible/ does)."""
    dirs = [policies / GUESTS_DIR]
    if inventory_file is not None and inventory_file.parent.resolve() != policies.resolve():
        dirs.append(inventory_file.parent / GUESTS_DIR)
    return dirs


def latest_scan(found: list[GuestNeeds]) -> GuestNeeds | None:
    """Of one VM's stored scans, the one made last (the earlier in ``found`` on a tie)."""
    return max(found, key=lambda needs: needs.scanned_at, default=None)


@dataclass
class Fleet:
    knowledge: Knowledge
    inventory: Inventory
    _hosts: dict[str, HostFacts]
    fallback: bool = False  # the example fleet, used because nothing else was configured
    notes: list[str] = field(default_factory=list)  # what gathering the inputs had to say

    @classmethod
    def load(
        cls, policies_dir: Path, knowledge: Knowledge, *, fallback: bool = False, inventory: Path | None = None
    ) -> Fleet:
        return cls(knowledge, read_inventory(policies_dir, inventory), {}, fallback and inventory is None)

    def host(self, spec: str) -> HostFacts:
        """An inventory host by name, or any host SOURCE."""
        if spec in self._hosts:
            return self._hosts[spec]
        entry = self.inventory.hosts.get(spec)
        if entry is not None:
            if not is_uri(entry.source) and ":" not in entry.source and not Path(entry.source).exists():
                raise BadInput(self.inventory.path, f"facts file of host {entry.name!r} does not exist: {entry.source}")
            facts = resolve_host(entry.source, self.knowledge, name=entry.name)
        else:
            if not looks_like_source(spec) and looks_like_path(spec):
                raise BadInput(spec, "no such file")  # as a missing VM file is reported
            if not looks_like_source(spec):
                import difflib

                close = difflib.get_close_matches(spec, list(self.inventory.hosts), n=3)
                raise UnknownName(self.inventory.path or self.inventory.root, "host", spec, close)
            facts = resolve_host(spec, self.knowledge)
        self._hosts[spec] = facts
        return facts

    def known_hosts(self) -> dict[str, HostFacts]:
        """Every inventory host whose facts come from files (never dials a URI)."""
        result = {}
        for name, entry in self.inventory.hosts.items():
            if not is_uri(entry.source):
                result[name] = self.host(name)
        return result

    def guest_needs(self, vm: str) -> GuestNeeds | None:
        """The stored scan of ``vm``'s disks, if any (see :func:`guest_scan_dirs`)."""
        from datetime import UTC, datetime

        from cpuguard.guest.store import read_needs

        now = datetime.now(UTC)
        paths = [d / f"{vm}.json" for d in guest_scan_dirs(self.inventory.root, self.inventory.path)]
        return latest_scan([read_needs(p, vm=vm, now=now) for p in paths if p.exists()])

    def rehearsals(self, vm: str, host: str) -> list[Rehearsed]:
        """The kept rehearsals of ``vm`` on ``host`` (``cpuguard rehearse``), newest first."""
        from cpuguard.rehearse.evidence import latest

        return latest(self.inventory.root, vm, host)

    def vm(self, spec: str) -> tuple[str, Domain | None, VmPolicy | None, str | None]:
        """(name, domain, policy, current host) for an inventory VM, a policy-only VM,
        a domain XML file, or ``URI/domain-name``."""
        policies = self.inventory.root
        entry = self.inventory.vms.get(spec)
        if entry is not None:
            domain = read_domain(entry.domain, self.knowledge) if entry.domain else None
            if domain is None and entry.host:
                host_entry = self.inventory.hosts[entry.host]
                if is_uri(host_entry.source):
                    with connect(host_entry.source) as hv:
                        domain = parse_domain(hv.domain_xml(spec), f"{host_entry.source}#{spec}", self.knowledge)
            return spec, domain, find_policy(policies, spec, self.knowledge), entry.host
        path = Path(spec)
        if path.suffix.lower() in (".yaml", ".yml"):
            policy = read_policy(path, self.knowledge)
            return policy.vm, None, policy, None
        if path.suffix.lower() == ".xml" or path.is_file():
            domain = read_domain(path, self.knowledge)
            # A domain XML from elsewhere takes the policy of its name only from a fleet the user
            # chose: the bundled example fleet must not lend its policies to unrelated domains.
            inside = path.resolve().is_relative_to(policies.resolve())
            if self.fallback and not inside:
                self.notes.append(
                    f"no policy applied: the bundled example fleet lends no policy to {path}; "
                    "give --policies DIR to use your fleet's"
                )
                return domain.name, domain, None, None
            current = self.inventory.vms.get(domain.name)
            return (
                domain.name,
                domain,
                find_policy(policies, domain.name, self.knowledge),
                current.host if current else None,
            )
        found = find_policy(policies, spec, self.knowledge)
        if found is not None:
            return spec, None, found, None
        if any((d / f"{spec}.json").is_file() for d in guest_scan_dirs(policies, self.inventory.path)):
            return spec, None, None, None  # only a stored guest scan: requirements_for adds it
        import difflib

        known = sorted(set(self.inventory.vms) | {p.stem for p in (policies / "vms").glob("*.yaml")})
        raise UnknownName(self.inventory.path or policies, "VM", spec, difflib.get_close_matches(spec, known, n=3))


def requirements_for(
    fleet: Fleet, vm_spec: str, move: Move, source_spec: str | None = None
) -> tuple[Requirements, str | None]:
    name, domain, policy, current = fleet.vm(vm_spec)
    policy = with_guest(policy, name, None if _outsider(fleet, vm_spec) else fleet.guest_needs(name))
    source_name = source_spec or current
    source = fleet.host(source_name) if source_name else None
    req = build_requirements(name, domain, policy, move, fleet.knowledge, source_host=source)
    if fleet.notes:
        req = replace(req, notes=(*req.notes, *fleet.notes))
    return req, source_name


def _outsider(fleet: Fleet, vm_spec: str) -> bool:
    """A domain XML from outside the bundled example fleet, used for want of another: the
    example fleet lends it neither policies nor guest scans (see :meth:`Fleet.vm`)."""
    path = Path(vm_spec)
    if not fleet.fallback or vm_spec in fleet.inventory.vms or not (path.suffix.lower() == ".xml" or path.is_file()):
        return False
    return not path.resolve().is_relative_to(fleet.inventory.root.resolve())


def check_vm(fleet: Fleet, vm_spec: str, host_spec: str, move: Move, source_spec: str | None = None) -> Verdict:
    req, _source = requirements_for(fleet, vm_spec, move, source_spec)
    host = fleet.host(host_spec)
    verdict = decide(req, host, alternatives=fleet.known_hosts())
    return with_rehearsals(verdict, fleet.rehearsals(verdict.vm, verdict.host))


def check_binaries(fleet: Fleet, paths: list[Path], host_spec: str, *, use_cache: bool = True) -> Verdict:
    """Scan ``paths`` and decide whether ``host_spec`` can run them (a fresh start: cold rule)."""
    from cpuguard.requirements import binary_requirements
    from cpuguard.scan import scan_paths
    from cpuguard.scan.records import BinaryNeeds
    from cpuguard.scan.walk import require_readable

    host = fleet.host(host_spec)  # a bad host name fails before a long scan
    require_readable(paths)  # a typo in a path is bad input, not a quiet skip
    report = scan_paths(paths) if use_cache else scan_paths(paths, cache_dir=None)
    scanned = report.scanned
    if not scanned:
        skipped = [f"{f.path}: {f.skipped}" for f in report.skipped]
        reasons = "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        reasons = reasons or "no files found"
        raise BadInput(None, f"nothing could be scanned ({reasons})")
    binaries = [
        BinaryNeeds(f.path, f.sha256, report.scanned_at, f.level, f.required, f.dispatched, f.notes) for f in scanned
    ]
    name = scanned[0].path if len(scanned) == 1 else f"{len(scanned)} binaries"
    req = binary_requirements(name, binaries)
    req = replace(req, notes=(*req.notes, *_skip_notes(report.skipped), *(n for f in scanned for n in f.notes)))
    verdict = decide(req, host, alternatives=fleet.known_hosts())
    lacking = {m.feature for m in verdict.missing}
    blocked = sorted(b.path for b in binaries if lacking & {use.feature for use in b.required})
    return replace(verdict, blocked=tuple(blocked))


def _skip_notes(skipped: tuple[FileScan, ...]) -> list[str]:
    """One note per file that could not be scanned, but one line for all the non-ELF files a
    directory holds (scripts beside programs are normal, not news)."""
    from cpuguard.scan.scanner import NOT_ELF

    notes = [f"skipped {f.path}: {f.skipped}" for f in skipped if f.skipped != NOT_ELF]
    quiet = sum(1 for f in skipped if f.skipped == NOT_ELF)
    if quiet:
        notes.append(f"skipped {quiet} file{'s' if quiet != 1 else ''} that {'are' if quiet != 1 else 'is'} not ELF")
    return notes
