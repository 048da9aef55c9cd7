"""Host facts from a copy of Linux's /proc/cpuinfo."""

from __future__ import annotations

import platform
from datetime import datetime
from pathlib import Path

from cpuguard.errors import BadInput
from cpuguard.hosts.refusal import NotThisKind
from cpuguard.records import HostFacts
from cpuguard.vocabulary import Vocabulary

MAX_CPUINFO_BYTES = 16 * 1024 * 1024  # 1,000+ logical CPUs of ~1.6 KiB each fit easily

# /proc/cpuinfo "vendor_id" -> libvirt vendor name (libvirt's cpu_map x86_vendors.xml)
_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon"}


def _blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def parse_cpuinfo(
    text: str,
    where: str | Path,
    vocabulary: Vocabulary,
    *,
    name: str = "",
    captured_at: datetime | None = None,
) -> HostFacts:
    """Parse /proc/cpuinfo text. Flags are the intersection over all CPUs listed
    (hybrid parts and odd firmware can differ per CPU; a guest may land on any)."""
    if "\x00" in text:
        raise NotThisKind(where, "contains NUL bytes")
    last_line = text.rsplit("\n", 1)[-1]
    if last_line.partition(":")[0].strip() in ("flags", "Features"):
        # A copy cut in the middle of a flags line parses as a CPU with fewer features. Linux
        # ends every line of /proc/cpuinfo with a newline (and x86 blocks do not end in flags).
        key = last_line.partition(":")[0].strip()
        raise BadInput(where, f"ends in the middle of a '{key}' line, without a newline: a truncated copy?")
    blocks = [b for b in _blocks(text) if "processor" in b]
    if not blocks:
        raise NotThisKind(where, "no 'processor' entries")
    first = blocks[0]
    if "flags" in first:  # x86
        flag_sets = [frozenset(b.get("flags", "").split()) for b in blocks]
        raw = frozenset.intersection(*flag_sets)
        if not raw:
            raise BadInput(where, "empty 'flags' line")
        flags = frozenset(vocabulary.try_canonical(f) or f for f in raw)
        vendor_id = first.get("vendor_id", "")
        hidden = vocabulary.cpuinfo_hidden.get(_VENDORS.get(vendor_id, vendor_id), {})
        flags |= {bit for shown, bits in hidden.items() if shown in flags for bit in bits}
        arch = "x86_64" if "lm" in flags else "i686"
        vendor_id = first.get("vendor_id", "")
        vendor = _VENDORS.get(vendor_id, vendor_id)
        model_name = first.get("model name", "")
    elif "Features" in first:  # aarch64 and other architectures Linux describes this way
        flags = frozenset.intersection(*(frozenset(b.get("Features", "").split()) for b in blocks))
        if not flags:
            raise BadInput(where, "empty 'Features' line")
        arch = "aarch64" if "CPU implementer" in first else platform.machine() or "unknown"
        vendor = first.get("CPU implementer", "")
        model_name = first.get("model name", first.get("CPU part", ""))
    else:
        raise NotThisKind(where, "neither 'flags' nor 'Features' found")
    return HostFacts(
        name=name,
        arch=arch,
        vendor=vendor,
        model_name=model_name,
        flags=flags,
        source=f"cpuinfo:{where}",
        kind="cpuinfo",
        captured_at=captured_at,
    )
