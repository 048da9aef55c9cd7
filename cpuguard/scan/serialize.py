"""Scan records <-> plain dicts (JSON/YAML output and the cache)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cpuguard.scan.records import (
    DECODED,
    DispatchedFeature,
    FeatureUse,
    FileScan,
    ScanReport,
    Totals,
)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def use_to_dict(use: FeatureUse) -> dict[str, Any]:
    result: dict[str, Any] = {
        "feature": use.feature,
        "instructions": use.instructions,
        "functions": use.functions,
        "examples": list(use.examples),
    }
    if use.evidence != DECODED:
        result["evidence"] = use.evidence
    return result


def dispatched_to_dict(item: DispatchedFeature, examples: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {
        "feature": item.feature,
        "reason": item.reason,
        "confidence": item.confidence,
        "instructions": item.instructions,
        "functions": item.functions,
    }
    if examples:
        result["examples"] = list(item.examples)
    return result


def file_to_dict(scan: FileScan) -> dict[str, Any]:
    result: dict[str, Any] = {"path": scan.path, "sha256": scan.sha256, "size": scan.size}
    if scan.skipped is not None:
        result["skipped"] = scan.skipped
        return result
    result.update(
        {
            "arch": scan.arch,
            "kind": scan.kind,
            "code_bytes": scan.code_bytes,
            "functions": scan.functions,
            "level": scan.level,
            "isa_needed": scan.isa_needed,
            "required": [use_to_dict(u) for u in scan.required],
            "dispatched": [dispatched_to_dict(d) for d in scan.dispatched],
            "notes": list(scan.notes),
            "needed_libraries": list(scan.needed_libraries),
            "runpath": list(scan.runpath),
            "from_cache": scan.from_cache,
        }
    )
    return result


def use_from_dict(raw: dict[str, Any]) -> FeatureUse:
    return FeatureUse(
        str(raw["feature"]),
        int(raw.get("instructions", 0)),
        int(raw.get("functions", 0)),
        tuple(str(e) for e in raw.get("examples", ())),
        str(raw.get("evidence", DECODED)),
    )


def dispatched_from_dict(raw: dict[str, Any]) -> DispatchedFeature:
    return DispatchedFeature(
        str(raw["feature"]),
        str(raw.get("reason", "")),
        str(raw.get("confidence", "low")),
        int(raw.get("instructions", 0)),
        int(raw.get("functions", 0)),
        tuple(str(e) for e in raw.get("examples", ())),
    )


def file_from_dict(raw: dict[str, Any]) -> FileScan:
    """Inverse of :func:`file_to_dict` (for the cache; raises KeyError/TypeError/ValueError)."""
    if "skipped" in raw:
        return FileScan(str(raw["path"]), raw.get("sha256"), int(raw.get("size", 0)),
                        skipped=str(raw["skipped"]))  # fmt: skip
    return FileScan(
        path=str(raw["path"]),
        sha256=raw.get("sha256"),
        size=int(raw.get("size", 0)),
        arch=raw.get("arch"),
        kind=raw.get("kind"),
        code_bytes=int(raw.get("code_bytes", 0)),
        functions=int(raw.get("functions", 0)),
        required=tuple(use_from_dict(u) for u in raw.get("required", ())),
        dispatched=tuple(dispatched_from_dict(d) for d in raw.get("dispatched", ())),
        level=raw.get("level"),
        isa_needed=raw.get("isa_needed"),
        notes=tuple(str(n) for n in raw.get("notes", ())),
        needed_libraries=tuple(str(n) for n in raw.get("needed_libraries", ())),
        runpath=tuple(str(n) for n in raw.get("runpath", ())),
        from_cache=bool(raw.get("from_cache", False)),
    )


def totals_to_dict(totals: Totals) -> dict[str, Any]:
    return {
        "files_scanned": totals.files_scanned,
        "files_skipped": totals.files_skipped,
        "code_bytes": totals.code_bytes,
        "level": totals.level,
        "required": [use_to_dict(u) for u in totals.required],
        "dispatched": [dispatched_to_dict(d) for d in totals.dispatched],
        "models": list(totals.models),
        "microarchitectures": list(totals.microarchitectures),
    }


def report_to_dict(report: ScanReport) -> dict[str, Any]:
    return {
        "scanned_at": iso(report.scanned_at),
        "totals": totals_to_dict(report.totals),
        "files": [file_to_dict(f) for f in report.files],
    }
