"""Everything the hook decides with, read once from the configuration's files.

:func:`build_context` is the slow path: it reads YAML policies, the
inventory, the host snapshot and cpuguard's knowledge. The result is plain
records; :mod:`cpuguard.hook.plain` turns them into the plain data
:mod:`cpuguard.hook.cache` keeps between hook calls, keyed on every file
listed in ``inputs``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cpuguard.config import Config, read_config
from cpuguard.errors import BadInput, CpuguardError
from cpuguard.knowledge import Knowledge
from cpuguard.policy import VmPolicy
from cpuguard.records import HostFacts


@dataclass(frozen=True)
class FileVersion:
    """Which version of an input a decision used (for the audit log)."""

    path: str
    sha256: str  # first 16 hex digits of the content's SHA-256
    mtime: float


@dataclass(frozen=True)
class HookContext:
    config: Config
    knowledge: Knowledge
    level_table: dict[str, list[str]]  # levels.level_table(), restored before deciding
    policies: dict[str, VmPolicy]  # by VM name (vms/<vm>.yaml)
    policy_versions: dict[str, FileVersion]
    vm_hosts: dict[str, str]  # inventory: where each VM runs
    inventory_hosts: dict[str, HostFacts]  # inventory hosts a VM runs on, facts from files or model:/uarch:/level:
    unreadable_hosts: dict[str, str]  # inventory host -> why the hook cannot know its facts (a URI)
    broken_hosts: dict[str, str]  # inventory host -> why its facts file was refused (one line)
    snapshot: HostFacts | None  # this host, from config host_facts; None when the file is missing
    snapshot_version: FileVersion | None
    inputs: tuple[str, ...] = field(default=())  # every file and directory this was built from
    # the first moment a stored guest scan's age or staleness, as the decision words them, would
    # read otherwise (see remarks_change); None: nothing in the context depends on the time
    expires: datetime | None = None


def file_version(path: Path, data: bytes) -> FileVersion:
    import hashlib  # not at the top: loading OpenSSL costs the cached path ~3 ms

    return FileVersion(str(path), hashlib.sha256(data).hexdigest()[:16], path.stat().st_mtime)


def loaded_package_files() -> list[str]:
    """cpuguard's modules loaded in this process, and its data files: the code and knowledge a
    context was built with. A change (upgrade, edit) must rebuild the cache."""
    import sys

    import cpuguard

    files = sorted(
        str(module.__file__)
        for name, module in list(sys.modules.items())
        if (name == "cpuguard" or name.startswith("cpuguard.")) and getattr(module, "__file__", None)
    )
    data = Path(cpuguard.__file__).with_name("data")
    return [*files, str(data), *(str(p) for p in sorted(data.iterdir()))]


def _knowledge_inputs() -> list[str]:
    from cpuguard.cpumap import SYSTEM_CPU_MAP

    inputs = [str(SYSTEM_CPU_MAP)]
    if SYSTEM_CPU_MAP.is_dir():
        inputs.extend(str(p) for p in sorted(SYSTEM_CPU_MAP.iterdir()))
    return inputs


def _read_policies(
    policies_dir: Path, knowledge: Knowledge, now: datetime
) -> tuple[dict[str, VmPolicy], dict[str, FileVersion], datetime | None]:
    from cpuguard.policy import policy_from_data
    from cpuguard.xmlsafe import read_bytes
    from cpuguard.yamlsafe import MAX_YAML_BYTES, parse_yaml

    policies: dict[str, VmPolicy] = {}
    versions: dict[str, FileVersion] = {}
    vms = policies_dir / "vms"
    for path in sorted(vms.iterdir()) if vms.is_dir() else ():
        if path.suffix not in (".yaml", ".yml") or path.name.startswith("."):
            continue
        if path.stem in policies:
            raise BadInput(path, f"VM {path.stem} has two policy files")
        data = read_bytes(path, MAX_YAML_BYTES)
        policies[path.stem] = policy_from_data(parse_yaml(data, path), path, knowledge, vm=path.stem)
        versions[path.stem] = file_version(path, data)
    expires = _add_guest_scans(policies_dir, policies, versions, now)
    return policies, versions, expires


def _add_guest_scans(
    policies_dir: Path, policies: dict[str, VmPolicy], versions: dict[str, FileVersion], now: datetime
) -> datetime | None:
    """Stored guest scans (``guests/<vm>.json``, written by ``inventory scan-guests``) join the
    VMs' policies, aged at ``now``; their file versions are kept as ``guest:<vm>``. The hook never
    opens a disk. Returns the first moment one of their remarks would read otherwise (None: no scan)."""
    from cpuguard.guest.store import GUESTS_DIR, MAX_RESULT_BYTES, STALE_AFTER_DAYS, needs_from_result, parse_result
    from cpuguard.policy import with_guest
    from cpuguard.xmlsafe import read_bytes

    guests = policies_dir / GUESTS_DIR
    if not guests.is_dir():
        return None
    changes: list[datetime] = []
    for path in sorted(guests.iterdir()):
        if path.suffix != ".json" or path.name.startswith("."):
            continue
        data = read_bytes(path, MAX_RESULT_BYTES)
        needs = needs_from_result(
            parse_result(data, path), path, vm=path.stem, now=now, stale_after_days=STALE_AFTER_DAYS
        )
        joined = with_guest(policies.get(path.stem), path.stem, needs)
        if joined is not None:
            policies[path.stem] = joined
        changes.append(remarks_change(needs.scanned_at, now, STALE_AFTER_DAYS))
        versions[f"guest:{path.stem}"] = file_version(path, data)
    return min(changes, default=None)


def remarks_change(scanned_at: datetime, now: datetime, stale_after_days: float) -> datetime:
    """The first moment after ``now`` the remarks on a guest scan taken at ``scanned_at``
    (requirements._guest_remarks) could read otherwise: its age is worded in whole hours under a
    day, in whole days after, and it turns stale once older than ``stale_after_days``. A second
    early: the remarks reckon the age in floating-point days."""
    age = max(now - scanned_at, timedelta(0))
    step = timedelta(hours=1) if age < timedelta(days=1) else timedelta(days=1)
    change = scanned_at + (age // step + 1) * step
    stale_at = scanned_at + timedelta(days=stale_after_days)
    if now <= stale_at:
        change = min(change, stale_at)
    return change - timedelta(seconds=1)


def check_owners(paths: list[str]) -> None:
    """Refuse inputs another user could change (config ``check_permissions``): the hook runs as
    root and decides by them. Each file and every directory above it (cpuguard.trust)."""
    from cpuguard.trust import check_trusted

    owners = frozenset({0, os.geteuid()})
    for path in paths:
        if os.path.isfile(path):
            check_trusted(path, owners=owners)


def trust_chains(paths: list[str]) -> list[str]:
    """Every directory above these files, as named and with symbolic links resolved: what
    cpuguard.trust.check_trusted looks at besides the files themselves."""
    directories: list[str] = []
    for path in paths:
        for start in (os.path.abspath(path), os.path.realpath(path)):
            where = os.path.dirname(start)
            while True:
                directories.append(where)
                parent = os.path.dirname(where)
                if parent == where:
                    break
                where = parent
    return list(dict.fromkeys(directories))


def build_context(config_path: Path, now: datetime | None = None) -> HookContext:
    """Read the configuration at ``config_path`` and everything it names; a stored guest scan's
    age is taken at ``now`` (default: the clock's).

    A broken file raises :class:`BadInput`: the hook then follows ``on_error``.
    A missing snapshot is not an error (the hook falls back to /proc/cpuinfo).
    """
    from cpuguard.hosts.snapshot import MAX_SNAPSHOT_BYTES, parse_snapshot
    from cpuguard.hosts.sources import is_uri, resolve_host
    from cpuguard.inventory import INVENTORY_NAME, read_inventory
    from cpuguard.knowledge import load_knowledge
    from cpuguard.levels import level_table
    from cpuguard.xmlsafe import read_bytes

    inputs = [str(config_path)]
    config = read_config(config_path)
    trusted = [str(config_path)]
    knowledge = load_knowledge()
    inputs += _knowledge_inputs()

    policies_dir = config.policies
    inputs += [str(policies_dir / d) for d in ("", "vms", "guests", INVENTORY_NAME)]
    if now is None:
        from datetime import UTC

        now = datetime.now(UTC)
    policies, versions, expires = _read_policies(policies_dir, knowledge, now)
    inputs += [v.path for v in versions.values()]

    inventory = read_inventory(policies_dir)
    vm_hosts = {name: vm.host for name, vm in inventory.vms.items() if vm.host}
    # Only where a VM runs can matter (the live rule for a host-passthrough or host-model guest,
    # decision.source_host); a host file that cannot be read fails the decisions that need it,
    # and is a warning for every other one, never a failure of them all.
    hosts: dict[str, HostFacts] = {}
    unreadable: dict[str, str] = {}
    broken: dict[str, str] = {}
    for name in sorted(set(vm_hosts.values())):
        entry = inventory.hosts[name]
        if is_uri(entry.source) or entry.source == "local":
            # Never dial libvirt from the hook: the daemon waits on it (https://libvirt.org/hooks.html).
            unreadable[name] = f"its facts come from {entry.source}, which the hook never contacts"
            continue
        is_file = ":" not in entry.source
        if is_file:
            inputs.append(entry.source)
        try:
            if is_file and config.check_permissions:
                check_owners([entry.source])
            hosts[name] = resolve_host(entry.source, knowledge, name=name)
        except CpuguardError as exc:
            broken[name] = str(exc)

    snapshot: HostFacts | None = None
    snapshot_version: FileVersion | None = None
    inputs.append(str(config.host_facts))
    if config.host_facts.exists():
        data = read_bytes(config.host_facts, MAX_SNAPSHOT_BYTES)
        snapshot = parse_snapshot(data, config.host_facts, knowledge.vocabulary)
        snapshot_version = file_version(config.host_facts, data)

    trusted += [i for i in inputs if i.startswith(str(policies_dir)) or i == str(config.host_facts)]
    host_files = {inventory.hosts[name].source for name in (*hosts, *broken)}
    trusted = [t for t in trusted if t not in host_files]  # checked one by one above
    if config.check_permissions:
        check_owners(trusted)
        # a chmod or chown above an input changes no input's signature: watch the directories too
        inputs += trust_chains([*trusted, *host_files])
    inputs += loaded_package_files()
    return HookContext(
        config=config,
        knowledge=knowledge,
        level_table=level_table(),
        policies=policies,
        policy_versions=versions,
        vm_hosts=vm_hosts,
        inventory_hosts=hosts,
        unreadable_hosts=unreadable,
        broken_hosts=broken,
        snapshot=snapshot,
        snapshot_version=snapshot_version,
        inputs=tuple(dict.fromkeys(inputs)),
        expires=expires,
    )
