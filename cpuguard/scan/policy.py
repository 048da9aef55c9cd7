"""Scan results as a VM policy's ``binaries:`` section, and back.

Format (an interface, documented in docs/scan.md)::

    binaries:
      - path: /usr/sbin/asterisk
        sha256: "…"
        scanned_at: "2026-11-21T12:00:00Z"
        level: x86-64-v3
        required:
          - {feature: avx2, instructions: 1234, functions: 87, examples: [ast_foo]}
          - {feature: avx512f, instructions: 0, functions: 0, examples: [], evidence: isa-note}
        dispatched:
          - {feature: avx512f, reason: "ifunc variant …", confidence: high,
             instructions: 10, functions: 1}
        notes: ["built with BUILD_NATIVE …"]
        found_in: "pbx01's disk vda"     # only for files read from a guest's disk
        reason: "owned by no package"   # why the guest scan chose the file

``scan --format yaml`` and ``--merge-into`` leave out the features of the x86-64
baseline level (x86-64-v1: every x86-64 CPU has them). Reading an entry with a
``level`` gives them back, so a policy with or without them decides the same and
a VM's needs still amount to at least x86-64-v1.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.scan.records import (
    CONFIDENCES,
    DECODED,
    FEATURE_NOTE,
    ISA_NOTE,
    BinaryNeeds,
    DispatchedFeature,
    FeatureUse,
    ScanReport,
)
from cpuguard.scan.serialize import dispatched_to_dict, iso, use_to_dict

ENTRY_KEYS = frozenset(
    {"path", "sha256", "scanned_at", "level", "required", "dispatched", "notes", "found_in", "reason"}
)
REQUIRED_KEYS = frozenset({"feature", "instructions", "functions", "examples", "evidence"})
DISPATCHED_KEYS = frozenset({"feature", "reason", "confidence", "instructions", "functions"})
EVIDENCE = (DECODED, ISA_NOTE, FEATURE_NOTE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def baseline_features() -> frozenset[str]:
    """What every x86-64 CPU has (the x86-64-v1 level): a policy needs no entry for it."""
    from cpuguard.levels import LEVEL_NAMES, level_features

    return level_features(LEVEL_NAMES[0])


def without_baseline(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``entries`` without the ``required`` items of baseline features (issue 14: on /usr/sbin
    they were nine in ten lines of the section)."""
    baseline = baseline_features()
    return [
        {**entry, "required": [u for u in entry["required"] if u.get("feature") not in baseline]}
        if isinstance(entry.get("required"), list)
        else entry
        for entry in entries
    ]


def _with_baseline(required: tuple[FeatureUse, ...], level: str | None) -> tuple[FeatureUse, ...]:
    """An entry with a ``level`` is an x86-64 program (the scanner gives every one at least
    x86-64-v1): it needs the baseline features, listed or left out. Given back as declared by
    the entry's level, as the ELF ISA level note declares them."""
    if level is None:
        return required
    listed = {u.feature for u in required}
    return required + tuple(FeatureUse(f, 0, 0, (), ISA_NOTE) for f in sorted(baseline_features() - listed))


def report_to_policy_binaries(report: ScanReport) -> list[dict[str, Any]]:
    """One ``binaries:`` entry per scanned file, in scan order."""
    scanned_at = iso(report.scanned_at)
    entries: list[dict[str, Any]] = []
    for scan in report.scanned:
        entries.append(
            {
                "path": scan.path,
                "sha256": scan.sha256,
                "scanned_at": scanned_at,
                "level": scan.level,
                "required": [use_to_dict(u) for u in scan.required],
                "dispatched": [dispatched_to_dict(d, examples=False) for d in scan.dispatched],
                "notes": list(scan.notes),
            }
        )
    return entries


def merge_binaries(existing: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries of ``new`` replace those of ``existing`` with the same path; order kept."""
    replacement = {entry["path"]: entry for entry in new}
    merged = [replacement.pop(e.get("path"), e) for e in existing]
    merged.extend(e for e in new if e["path"] in replacement)
    return merged


class _Checker:
    def __init__(self, where: Path | str | None, canonical: Callable[[str], str]) -> None:
        self.where = where
        self.canonical = canonical

    def fail(self, key: str, problem: str) -> BadInput:
        return BadInput(self.where, f"{key}: {problem}")

    def mapping(self, value: Any, key: str, allowed: frozenset[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(value)}")
        for name in value:
            if name not in allowed:
                raise self.fail(f"{key}.{name}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {_kind(value)}")
        return value

    def count(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected a count (integer >= 0), got {_kind(value)}")
        if value < 0:
            raise self.fail(key, f"expected a count (integer >= 0), got {value}")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of strings, got {_kind(value)}")
        return tuple(self.text(v, f"{key}[{i}]") for i, v in enumerate(value))

    def items(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_kind(value)}")
        return value

    def feature(self, value: Any, key: str) -> str:
        name = self.text(value, key)
        try:
            return self.canonical(name)
        except BadInput as exc:
            problem = getattr(exc, "problem", str(exc))
            raise self.fail(key, problem) from None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _moment(check: _Checker, value: Any, key: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):  # YAML reads unquoted timestamps as datetimes
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = check.text(value, key)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise check.fail(key, f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _required(check: _Checker, raw: Any, key: str) -> FeatureUse:
    item = check.mapping(raw, key, REQUIRED_KEYS)
    if "feature" not in item:
        raise check.fail(key, "missing key 'feature'")
    evidence = item.get("evidence", DECODED)
    if evidence not in EVIDENCE:
        raise check.fail(f"{key}.evidence", f"expected one of {', '.join(EVIDENCE)}")
    return FeatureUse(
        check.feature(item["feature"], f"{key}.feature"),
        check.count(item.get("instructions", 0), f"{key}.instructions"),
        check.count(item.get("functions", 0), f"{key}.functions"),
        check.strings(item.get("examples", []), f"{key}.examples"),
        evidence,
    )


def _dispatched(check: _Checker, raw: Any, key: str) -> DispatchedFeature:
    item = check.mapping(raw, key, DISPATCHED_KEYS)
    if "feature" not in item:
        raise check.fail(key, "missing key 'feature'")
    confidence = item.get("confidence", "low")
    if confidence not in CONFIDENCES:
        raise check.fail(f"{key}.confidence", f"expected one of {', '.join(CONFIDENCES)}")
    return DispatchedFeature(
        check.feature(item["feature"], f"{key}.feature"),
        check.text(item.get("reason", "unspecified"), f"{key}.reason"),
        confidence,
        check.count(item.get("instructions", 0), f"{key}.instructions"),
        check.count(item.get("functions", 0), f"{key}.functions"),
    )


def policy_binaries_from_data(
    data: Any,
    source_path: Path | str | None,
    canonical: Callable[[str], str] | None = None,
) -> list[BinaryNeeds]:
    """Validate a policy's ``binaries:`` section (or a whole policy mapping holding one).

    Unknown keys and wrong types raise :class:`BadInput` naming the file and
    the key, e.g. ``pbx01.yaml: binaries[0].required[2].feature: unknown CPU
    feature 'avx3'``. ``canonical`` maps feature names (default: the vocabulary).
    """
    from cpuguard.levels import normalize_level

    if canonical is None:
        from cpuguard.vocabulary import load_vocabulary

        canonical = load_vocabulary().canonical
    check = _Checker(source_path, canonical)
    if isinstance(data, dict):  # a whole policy: its binaries section, if any
        data = data.get("binaries")
    if data is None:
        return []
    result: list[BinaryNeeds] = []
    for i, raw in enumerate(check.items(data, "binaries")):
        key = f"binaries[{i}]"
        entry = check.mapping(raw, key, ENTRY_KEYS)
        for needed in ("path", "required"):
            if needed not in entry:
                raise check.fail(key, f"missing key {needed!r}")
        sha256 = entry.get("sha256")
        if sha256 is not None and not _SHA256.match(check.text(sha256, f"{key}.sha256")):
            raise check.fail(f"{key}.sha256", "expected 64 lowercase hexadecimal digits")
        level = entry.get("level")
        if level is not None:
            try:
                level = normalize_level(check.text(level, f"{key}.level"))
            except BadInput as exc:
                raise check.fail(f"{key}.level", getattr(exc, "problem", str(exc))) from None
        required = tuple(
            _required(check, item, f"{key}.required[{j}]")
            for j, item in enumerate(check.items(entry["required"], f"{key}.required"))
        )
        dispatched = tuple(
            _dispatched(check, item, f"{key}.dispatched[{j}]")
            for j, item in enumerate(check.items(entry.get("dispatched", []), f"{key}.dispatched"))
        )
        result.append(
            BinaryNeeds(
                path=check.text(entry["path"], f"{key}.path"),
                sha256=sha256,
                scanned_at=_moment(check, entry.get("scanned_at"), f"{key}.scanned_at"),
                level=level,
                required=_with_baseline(required, level),
                dispatched=dispatched,
                notes=check.strings(entry.get("notes", []), f"{key}.notes"),
                source=str(source_path) if source_path is not None else "",
                found_in=check.text(entry["found_in"], f"{key}.found_in") if "found_in" in entry else "",
                reason=check.text(entry["reason"], f"{key}.reason") if "reason" in entry else "",
            )
        )
    return result
