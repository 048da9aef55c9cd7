"""Domain XML for the test guests: the disks libvirt (or cpuguard) is told to read."""

from __future__ import annotations

from pathlib import Path

PASSTHROUGH = "<cpu mode='host-passthrough'/>"


def custom_cpu(model: str = "Westmere") -> str:
    return f"<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>{model}</model></cpu>"


def domain_xml(
    name: str, disk: Path | str, fmt: str = "qcow2", *, cpu: str = PASSTHROUGH, testbed: bool = False
) -> str:
    """One guest with one virtio disk. ``testbed``: the small TCG guest scripts/testbed starts
    (64 MiB, its emulator, no balloon), for a daemon that really runs it."""
    kind = "qemu" if testbed else "kvm"
    extra = "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n" if testbed else ""
    tail = "    <memballoon model='none'/>\n" if testbed else ""
    machine = " machine='pc'" if testbed else ""
    return (
        f"<domain type='{kind}'>\n"
        f"  <name>{name}</name>\n"
        f"  <memory unit='MiB'>{64 if testbed else 512}</memory>\n"
        "  <vcpu>1</vcpu>\n"
        f"  <os><type arch='x86_64'{machine}>hvm</type></os>\n"
        f"  {cpu}\n"
        "  <devices>\n"
        f"{extra}"
        "    <disk type='file' device='disk'>\n"
        f"      <driver name='qemu' type='{fmt}'/>\n"
        f"      <source file='{disk}'/>\n"
        "      <target dev='vda' bus='virtio'/>\n"
        "    </disk>\n"
        f"{tail}"
        "  </devices>\n"
        "</domain>\n"
    )
