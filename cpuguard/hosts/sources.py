"""Resolve a host SOURCE string to host facts.

SOURCE is one of (documented in docs/host-sources.md):
``model:NAME``, ``uarch:NAME``, ``level:x86-64-vN``, a libvirt URI
(``qemu:///system``, ``qemu+ssh://node3/system``), ``local`` (this
machine), or a file: a cpuguard snapshot (JSON), ``virsh capabilities`` or
``virsh domcapabilities`` XML, or a /proc/cpuinfo copy, told apart by
content. Inventory host names are resolved by the caller first.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cpuguard.errors import BadInput, MissingDependency
from cpuguard.hosts.cpuinfo import MAX_CPUINFO_BYTES, parse_cpuinfo
from cpuguard.hosts.libvirtxml import parse_capabilities
from cpuguard.hosts.refusal import NotThisKind
from cpuguard.hosts.snapshot import parse_snapshot
from cpuguard.hosts.synthetic import level_host, model_host, uarch_host
from cpuguard.knowledge import Knowledge
from cpuguard.libvirt_api import Hypervisor, connect
from cpuguard.records import HostFacts
from cpuguard.xmlsafe import read_bytes

PROC_CPUINFO = Path("/proc/cpuinfo")


def is_uri(source: str) -> bool:
    return "://" in source


def looks_like_source(spec: str) -> bool:
    """Whether ``spec`` is a host SOURCE (``local``, ``model:``/``uarch:``/``level:``, a URI,
    a path) rather than an inventory host name. Callers look ``spec`` up in the inventory
    first: a host named like a file in the working directory is still the inventory's."""
    return spec == "local" or ":" in spec or "/" in spec or Path(spec).exists()


#: Suffixes of the host files cpuguard reads (snapshot, capabilities XML, a cpuinfo copy).
FILE_SUFFIXES = (".json", ".xml", ".txt")


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` was meant as a file: it has a directory part or a host file's suffix."""
    return "/" in spec or Path(spec).suffix.lower() in FILE_SUFFIXES


def as_kvm_host(facts: HostFacts, knowledge: Knowledge) -> HostFacts:
    """Facts of a bare CPU (/proc/cpuinfo, ``virsh capabilities``) as what its KVM guests get:
    add the features KVM provides on any host (data/feature_names.yaml, hypervisor_provided)."""
    provided = knowledge.vocabulary.hypervisor_provided
    if facts.arch != "x86_64" or provided <= facts.flags:
        return facts
    note = f"KVM provides {', '.join(sorted(provided - facts.flags))} to guests on any host"
    return replace(facts, flags=facts.flags | provided, notes=(*facts.notes, note))


#: The host files cpuguard reads, as a refusal names them; and what a file is taken for, shorter.
_SNAPSHOT = "a cpuguard snapshot"
_LIBVIRT = "a libvirt capabilities or domcapabilities document"
_CPUINFO = "a /proc/cpuinfo copy"
_SHORT = {_SNAPSHOT: "a cpuguard snapshot", _LIBVIRT: "libvirt XML", _CPUINFO: "a /proc/cpuinfo copy"}
_BY_SUFFIX = {".json": _SNAPSHOT, ".xml": _LIBVIRT}


def _taken_for(path: Path, data: bytes) -> tuple[str, str]:
    """What a host file is taken for, and why: its first character, else its suffix."""
    head = data.lstrip()[:1]
    if head == b"{":
        return _SNAPSHOT, "it starts with '{'"
    if head == b"<":
        return _LIBVIRT, "it starts with '<'"
    by_suffix = _BY_SUFFIX.get(path.suffix.lower())
    if by_suffix is not None:
        return by_suffix, f"its name ends in {path.suffix}"
    return _CPUINFO, "it starts with neither '{' nor '<'"


def _read_as(kind: str, data: bytes, path: Path, knowledge: Knowledge, name: str) -> HostFacts:
    if kind == _SNAPSHOT:
        if data.lstrip()[:1] != b"{":
            raise NotThisKind(path, "does not start with '{'")
        return parse_snapshot(data, path, knowledge.vocabulary, name=name or None)
    if kind == _LIBVIRT:
        if data.lstrip()[:1] != b"<":
            raise NotThisKind(path, "does not start with '<'")
        facts = parse_capabilities(data, path, knowledge.vocabulary, knowledge.cpu_map, name=name)
        return as_kvm_host(facts, knowledge) if facts.kind == "capabilities" else facts
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotThisKind(path, "not UTF-8 text") from None
    return as_kvm_host(parse_cpuinfo(text, path, knowledge.vocabulary, name=name), knowledge)


def host_from_file(path: Path, knowledge: Knowledge, *, name: str = "") -> HostFacts:
    """A snapshot, libvirt XML or a /proc/cpuinfo copy, told apart by content (then by suffix).

    When the reader a file is taken for says it is not its kind of document, the file may be
    another kind (a cpuinfo copy named .xml): the other readers try, and a refusal names what
    the file was taken for and why each reader refused it."""
    data = read_bytes(path, MAX_CPUINFO_BYTES)
    if not data.strip():
        raise BadInput(path, "empty file")
    kind, why = _taken_for(path, data)
    try:
        return _read_as(kind, data, path, knowledge, name)
    except NotThisKind as exc:
        refusals = [f"not {kind}: {exc.problem}"]
    for other in (_LIBVIRT, _CPUINFO, _SNAPSHOT):
        if other == kind:
            continue
        try:
            return _read_as(other, data, path, knowledge, name)
        except NotThisKind as exc:
            refusals.append(f"not {other}: {exc.problem}")
    raise BadInput(path, f"taken for {_SHORT[kind]} ({why}), but {'; '.join(refusals)}")


def host_from_hypervisor(hv: Hypervisor, knowledge: Knowledge, *, name: str = "") -> HostFacts:
    """Prefer domcapabilities' host-model (what a guest can get); fall back to capabilities."""
    now = datetime.now(UTC)
    host_name = name or hv.hostname()
    try:
        xml = hv.domain_capabilities()
        facts = parse_capabilities(xml, hv.uri, knowledge.vocabulary, knowledge.cpu_map, name=host_name)
    except BadInput:
        xml = hv.capabilities()
        facts = parse_capabilities(xml, hv.uri, knowledge.vocabulary, knowledge.cpu_map, name=host_name)
        facts = as_kvm_host(facts, knowledge)
    return replace(facts, captured_at=now, source=f"libvirt:{hv.uri} ({facts.kind})")


def local_host(knowledge: Knowledge, *, name: str = "", cpuinfo: Path = PROC_CPUINFO) -> HostFacts:
    """This machine: libvirt's view through qemu:///system when reachable, else /proc/cpuinfo."""
    import socket

    host_name = name or socket.gethostname()
    try:
        with connect("qemu:///system") as hv:
            return host_from_hypervisor(hv, knowledge, name=host_name)
    except (MissingDependency, BadInput) as exc:
        if not cpuinfo.exists():  # not Linux: ask the CPU itself, slowly
            from cpuguard.hosts.pycpuinfo import read_py_cpuinfo

            facts = read_py_cpuinfo(knowledge.vocabulary, name=host_name, captured_at=datetime.now(UTC))
            return as_kvm_host(replace(facts, notes=(*facts.notes, f"libvirt not used ({exc})")), knowledge)
        facts = parse_cpuinfo(
            cpuinfo.read_text(encoding="utf-8", errors="replace"),
            cpuinfo,
            knowledge.vocabulary,
            name=host_name,
            captured_at=datetime.now(UTC),
        )
        note = f"libvirt not used ({exc}); /proc/cpuinfo shows the kernel's view, not what KVM offers guests"
        return as_kvm_host(replace(facts, notes=(*facts.notes, note)), knowledge)


#: Which view of a host is closest to what a guest really gets, best first.
_PREFERENCE = ("domcapabilities", "snapshot", "capabilities", "cpuinfo", "model", "uarch", "level")


def preferred(views: list[HostFacts]) -> HostFacts:
    """Of several views of one host, the one closest to what a guest gets (domcapabilities'
    host-model first), noting the others."""
    if not views:
        raise BadInput(None, "no host source given")
    ranked = sorted(views, key=lambda f: _PREFERENCE.index(f.kind) if f.kind in _PREFERENCE else len(_PREFERENCE))
    best, others = ranked[0], ranked[1:]
    for other in others:  # views of one host: refuse to merge two different machines silently
        if (other.arch, other.vendor) != (best.arch, best.vendor):
            raise BadInput(
                other.source,
                f"not the same host as {best.source}: {other.arch} {other.vendor or '?'} "
                f"against {best.arch} {best.vendor or '?'}",
            )
    if not others:
        return best
    note = "preferred over " + ", ".join(o.source for o in others)
    return replace(best, notes=(*best.notes, note))


def resolve_host(source: str, knowledge: Knowledge, *, name: str = "") -> HostFacts:
    kind, sep, rest = source.partition(":")
    if sep and not is_uri(source):
        if kind == "model":
            return model_host(rest, knowledge, name)
        if kind == "uarch":
            return uarch_host(rest, knowledge, name)
        if kind == "level":
            return level_host(rest, knowledge, name)
    if is_uri(source):
        with connect(source) as hv:
            return host_from_hypervisor(hv, knowledge, name=name)
    if source == "local":
        return local_host(knowledge, name=name)
    path = Path(source)
    if not path.exists():
        if looks_like_path(source):  # as a missing VM file is reported
            raise BadInput(source, "no such file")
        raise BadInput(
            source,
            "not a known host, file, libvirt URI, model:NAME, uarch:NAME or level:x86-64-vN",
        )
    facts = host_from_file(path, knowledge, name=name)
    return facts if facts.name else replace(facts, name=path.stem)  # a snapshot keeps its recorded name
