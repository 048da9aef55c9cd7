"""The one module that talks to libvirt (libvirt-python), behind a small Protocol.

libvirt-python is an optional extra (``pip install 'cpuguard[libvirt]'``);
without it, only saved data (snapshots, XML files) can be used. Never use
this module from the libvirt hook: the daemon waits on the hook, and calling
back into it can deadlock (https://libvirt.org/hooks.html).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from cpuguard.errors import BadInput, MissingDependency


class Hypervisor(Protocol):
    """What cpuguard needs from a libvirt connection."""

    uri: str

    def capabilities(self) -> str: ...

    def domain_capabilities(self, arch: str | None = None) -> str: ...

    def domains(self) -> list[tuple[str, str, bool]]:
        """(name, domain XML, running) for every domain."""
        ...

    def domain_xml(self, name: str) -> str: ...

    def hostname(self) -> str: ...


@dataclass
class LibvirtHypervisor:
    uri: str
    conn: Any

    def capabilities(self) -> str:
        return str(self.conn.getCapabilities())

    def domain_capabilities(self, arch: str | None = None) -> str:
        import libvirt

        last: Exception | None = None
        for virttype in ("kvm", "qemu"):
            try:
                return str(self.conn.getDomainCapabilities(None, arch, None, virttype, 0))
            except libvirt.libvirtError as exc:
                last = exc
        raise BadInput(self.uri, f"no domain capabilities: {last}")

    def domains(self) -> list[tuple[str, str, bool]]:
        return [(d.name(), str(d.XMLDesc(0)), bool(d.isActive())) for d in self.conn.listAllDomains(0)]

    def domain_xml(self, name: str) -> str:
        import libvirt

        try:
            return str(self.conn.lookupByName(name).XMLDesc(0))
        except libvirt.libvirtError as exc:
            raise BadInput(self.uri, f"no domain {name!r}: {exc.get_error_message()}") from None

    def hostname(self) -> str:
        return str(self.conn.getHostname())


def _libvirt_module() -> Any:
    try:
        import libvirt
    except ImportError:
        raise MissingDependency(
            "libvirt-python is not installed: install it with "
            "\"pip install 'cpuguard[libvirt]'\" (needs Debian's libvirt-dev and pkg-config) "
            "or use saved files (cpuguard host snapshot on the host, virsh capabilities)"
        ) from None
    return libvirt


@contextmanager
def connect(uri: str, *, readonly: bool = True) -> Iterator[Hypervisor]:
    libvirt = _libvirt_module()
    # libvirt prints errors to stderr through its default handler; keep them in exceptions.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise BadInput(uri, f"cannot connect to libvirt: {exc.get_error_message()}") from None
    try:
        yield LibvirtHypervisor(uri, conn)
    finally:
        conn.close()
