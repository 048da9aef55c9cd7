"""cpuguard host snapshot files: one host's facts saved as JSON.

Format (an interface, documented in docs/host-sources.md)::

    {"cpuguard_snapshot": 1, "host": "old-node", "arch": "x86_64",
     "vendor": "Intel", "model_name": "...", "libvirt_model": "Westmere",
     "flags": ["aes", ...], "source": "model:Westmere", "kind": "model",
     "captured_at": "2026-11-21T12:00:00+00:00", "cpuguard_version": "0.1.0",
     "notes": []}

Written atomically (temporary file, fsync, rename) so a reader never sees
half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cpuguard import __version__
from cpuguard.errors import BadInput
from cpuguard.hosts.refusal import NotThisKind
from cpuguard.jsonsafe import parse_json
from cpuguard.records import HostFacts
from cpuguard.vocabulary import Vocabulary

FORMAT_VERSION = 1
MAX_SNAPSHOT_BYTES = 1024 * 1024
_KEYS = {
    "cpuguard_snapshot", "host", "arch", "vendor", "model_name", "libvirt_model", "flags",
    "source", "kind", "captured_at", "cpuguard_version", "notes",
}  # fmt: skip
_REQUIRED = {"cpuguard_snapshot", "arch", "flags"}


def snapshot_to_dict(facts: HostFacts) -> dict[str, Any]:
    return {
        "cpuguard_snapshot": FORMAT_VERSION,
        "host": facts.name,
        "arch": facts.arch,
        "vendor": facts.vendor,
        "model_name": facts.model_name,
        "libvirt_model": facts.libvirt_model,
        "flags": sorted(facts.flags),
        "source": facts.source,
        "kind": facts.kind,
        "captured_at": facts.captured_at.isoformat() if facts.captured_at else None,
        "cpuguard_version": __version__,
        "notes": list(facts.notes),
    }


def _str(raw: Mapping[str, Any], key: str, where: Path | str, *, optional: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadInput(where, f"key {key!r} must be a string")
    return value


def snapshot_from_dict(raw: Any, where: Path | str, vocabulary: Vocabulary, *, name: str | None = None) -> HostFacts:
    if not isinstance(raw, dict):
        raise NotThisKind(where, "not a JSON object")
    # the format version first: a newer cpuguard's snapshot is "unsupported", not "broken"
    if "cpuguard_snapshot" in raw and (
        type(raw["cpuguard_snapshot"]) is not int or raw["cpuguard_snapshot"] != FORMAT_VERSION  # true == 1
    ):
        raise BadInput(where, f"unsupported snapshot format {raw['cpuguard_snapshot']!r} (this cpuguard reads 1)")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise BadInput(where, f"unknown key {unknown[0]!r} in snapshot")
    missing = sorted(_REQUIRED - set(raw))
    if missing:
        raise BadInput(where, f"not a cpuguard snapshot: missing key {missing[0]!r}")
    flags = raw["flags"]
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise BadInput(where, "key 'flags' must be a list of strings")
    captured_text = _str(raw, "captured_at", where)
    captured = None
    if captured_text:
        try:
            captured = datetime.fromisoformat(captured_text)
        except ValueError:
            raise BadInput(where, f"bad captured_at {captured_text!r}") from None
    notes = raw.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise BadInput(where, "key 'notes' must be a list of strings")
    arch = _str(raw, "arch", where, optional=False) or ""
    canonical = frozenset(vocabulary.try_canonical(f) or f for f in flags)
    return HostFacts(
        name=name or _str(raw, "host", where) or "",
        arch=arch,
        vendor=_str(raw, "vendor", where) or "",
        model_name=_str(raw, "model_name", where) or "",
        flags=canonical,
        source=f"snapshot:{where}",
        kind="snapshot",
        captured_at=captured,
        libvirt_model=_str(raw, "libvirt_model", where),
        notes=tuple(notes) + ((f"captured from {raw['source']}",) if raw.get("source") else ()),
    )


def parse_snapshot(data: bytes, where: Path | str, vocabulary: Vocabulary, *, name: str | None = None) -> HostFacts:
    if len(data) > MAX_SNAPSHOT_BYTES:  # read_bytes' cap differs when the file's kind was guessed
        raise BadInput(where, f"snapshot is larger than {MAX_SNAPSHOT_BYTES} bytes, refusing it")
    try:
        raw = parse_json(data, where)
    except BadInput as exc:  # not JSON at all: perhaps another kind of host file
        raise NotThisKind(where, exc.problem) from None
    return snapshot_from_dict(raw, where, vocabulary, name=name)


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:  # name the file the caller asked for, not a temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_snapshot(facts: HostFacts, path: Path) -> None:
    write_atomically(path, json.dumps(snapshot_to_dict(facts), indent=2) + "\n")
