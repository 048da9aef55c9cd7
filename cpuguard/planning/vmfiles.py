"""VMs' domain XML and policy files, parsed on every core when there are thousands.

Parsing is the core's (``domain.read_domain``, ``policy.policy_from_data``);
what differs from ``cpuguard check``, which reads one VM, is measured on the
benchmark fleet (10,000 VMs, 1,994 policies; CPU time):

* policies are found by listing ``vms/`` once, not with ``policy.find_policy``
  per VM: two ``stat`` calls for each VM without a policy took 165 ms;
* policy YAML goes through :mod:`cpuguard.planning.yamlread` (libyaml's C
  parser behind the same guards) instead of ``policy.read_policy``'s
  pure-Python loader: 237 ms instead of 740 ms for the 1,994 policies.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cpuguard.domain import read_domain
from cpuguard.errors import BadInput, CpuguardError
from cpuguard.knowledge import Knowledge
from cpuguard.planning import yamlread
from cpuguard.policy import VmPolicy, policy_from_data
from cpuguard.records import Domain, GuestCpu
from cpuguard.yamlsafe import MAX_YAML_BYTES


def policy_files(policies: Path) -> dict[str, Path]:
    """VM name -> its policy file under ``policies/vms``; ``.yaml`` before ``.yml``, as ``find_policy``."""
    found: dict[str, Path] = {}
    directory = policies / "vms"
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if path.suffix in (".yaml", ".yml"):
                found.setdefault(path.stem, path)
    return found


def read_policy(path: Path, vm: str, knowledge: Knowledge) -> VmPolicy:
    """``policy.read_policy`` through the faster reader, refusing duplicate keys just the same."""
    raw = yamlread.read(path, MAX_YAML_BYTES)
    duplicate = yamlread.first_duplicate(raw)
    if duplicate is not None:
        key, line = duplicate
        raise BadInput(path, f"invalid YAML: duplicate key {key!r}{f' (line {line})' if line else ''}")
    return policy_from_data(raw, path, knowledge, vm=vm)


#: Below this many VMs, reading their files in this process is faster than starting workers.
PARALLEL_VMS = 2000

#: What a worker returns per VM: (name, domain or its error, policy or its error).
_VmFiles = tuple[str, "Domain | str | None", "VmPolicy | str | None"]


def _read_vm(name: str, domain: str | None, policy: str | None, knowledge: Knowledge) -> _VmFiles:
    parsed_domain: Domain | str | None = None
    parsed_policy: VmPolicy | str | None = None
    try:
        parsed_policy = read_policy(Path(policy), name, knowledge) if policy else None
    except CpuguardError as exc:
        parsed_policy = str(exc)
    try:
        parsed_domain = read_domain(Path(domain), knowledge) if domain else None
    except CpuguardError as exc:
        parsed_domain = str(exc)
    return name, parsed_domain, parsed_policy


def _read_vm_chunk(chunk: list[tuple[str, str | None, str | None]]) -> tuple[list[GuestCpu], list[Any]]:
    """In a worker: parse VMs' domain XML and policies; a failure comes back as its one-line message.

    Sent back compactly: pickling 10,000 ``Domain`` records costs a third of a
    second, so each distinct guest CPU definition is sent once and a domain as
    a tuple of strings referring to it.
    """
    from cpuguard.knowledge import load_knowledge

    knowledge = load_knowledge()  # inherited from the parent through fork: no reload
    cpus: dict[GuestCpu, int] = {}
    rows: list[Any] = []
    for name, domain_path, policy_path in chunk:
        _name, domain, policy = _read_vm(name, domain_path, policy_path, knowledge)
        if isinstance(domain, Domain):
            cpu = cpus.setdefault(domain.cpu, len(cpus))
            rows.append((name, (domain.name, domain.arch, domain.virt_type, cpu, domain.source), policy))
        else:
            rows.append((name, domain, policy))
    return list(cpus), rows


def _unpack_chunk(cpus: list[GuestCpu], rows: list[Any]) -> list[_VmFiles]:
    result: list[_VmFiles] = []
    for name, domain, policy in rows:
        if isinstance(domain, tuple):
            domain_name, arch, virt_type, cpu, source = domain
            domain = Domain(domain_name, arch, virt_type, cpus[cpu], source)
        result.append((name, domain, policy))
    return result


class VmFileReader:
    """VMs' domain XML and policy files, parsed on every core when there are thousands.

    Parsing 10,000 definitions and 2,000 policies takes over a second in one
    process; forked workers share the loaded knowledge and send back plain
    records. Fork only when this process runs no other thread (a hung libvirt
    connection from ``_read_hosts`` may), else parse here.
    """

    def __init__(
        self,
        files: Mapping[str, tuple[Path | None, Path | None]],
        knowledge: Knowledge,
        *,
        threshold: int = PARALLEL_VMS,
    ) -> None:
        self.items = [(n, str(d) if d else None, str(p) if p else None) for n, (d, p) in sorted(files.items())]
        self.knowledge = knowledge
        self.threshold = threshold
        self.results: dict[str, _VmFiles] = {}
        self.pending: list[Any] = []
        self.pool: Any = None

    def __enter__(self) -> VmFileReader:
        import os
        import threading

        workers = min(os.cpu_count() or 1, 8)
        if len(self.items) < self.threshold or workers < 2 or threading.active_count() > 1:
            return self
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        size = -(-len(self.items) // (workers * 4))
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        chunks = [self.items[i : i + size] for i in range(0, len(self.items), size)]
        self.pending = [self.pool.submit(_read_vm_chunk, chunk) for chunk in chunks]
        return self

    def all(self) -> list[_VmFiles]:
        """Every VM's (name, domain, policy), in name order."""
        if self.pool is None:
            return [_read_vm(name, domain, policy, self.knowledge) for name, domain, policy in self.items]
        return [entry for future in self.pending for entry in _unpack_chunk(*future.result())]

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
