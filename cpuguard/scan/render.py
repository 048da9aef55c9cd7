"""Scan reports as text (for people), JSON (the full report) and YAML (a policy's ``binaries:``).

Renderers only format: what counts as baseline is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from cpuguard.render.features import wrap
from cpuguard.scan.policy import report_to_policy_binaries, without_baseline
from cpuguard.scan.records import ISA_NOTE, DispatchedFeature, FeatureUse, FileScan, ScanReport
from cpuguard.scan.serialize import report_to_dict

QUIET_SKIPS = frozenset({"not an ELF file"})
NAME_WIDTH = 16


def _size(code_bytes: int) -> str:
    if code_bytes >= 1 << 20:
        return f"{code_bytes / (1 << 20):.1f} MiB"
    return f"{code_bytes / 1024:.0f} KiB"


def _use_line(use: FeatureUse) -> str:
    if use.evidence == ISA_NOTE:
        return f"    {use.feature:<{NAME_WIDTH}} declared by the ELF ISA level note"
    if use.evidence != "decoded":
        return f"    {use.feature:<{NAME_WIDTH}} declared by the ELF feature note"
    plural = "s" if use.instructions != 1 else ""
    fplural = "s" if use.functions != 1 else ""
    line = (
        f"    {use.feature:<{NAME_WIDTH}} {use.instructions:>7,} instruction{plural}"
        f" in {use.functions:,} function{fplural}"
    )
    if use.examples:
        line += f"  e.g. {', '.join(use.examples[:3])}"
    return line


def _dispatched_lines(items: Iterable[DispatchedFeature]) -> list[str]:
    groups: dict[tuple[str, str], list[str]] = {}
    for item in items:
        groups.setdefault((item.reason, item.confidence), []).append(item.feature)
    return [
        f"    {', '.join(features)} ({confidence}): {reason}"
        for (reason, confidence), features in sorted(groups.items(), key=lambda g: g[1])
    ]


def _needs_head(beyond: list[FeatureUse], level: str | None) -> list[str]:
    """``needs x86-64-v3: abm, avx, ...``, comma-separated like check, plan and host show."""
    head = f"needs {level or 'no x86-64 level'}"
    if not beyond:
        head += ": nothing beyond the x86-64 baseline"
    else:
        head += ": " + ", ".join(u.feature for u in beyond)
    return wrap(head, "  ")


def _needs(required: Iterable[FeatureUse], level: str | None, baseline: frozenset[str]) -> list[str]:
    uses = list(required)
    beyond = [u for u in uses if u.feature not in baseline]
    basic = sorted(u.feature for u in uses if u.feature in baseline)
    lines = _needs_head(beyond, level)
    lines.extend(_use_line(u) for u in beyond)
    if basic:
        lines.extend(wrap(f"baseline: {', '.join(basic)}", "    "))
    return lines


def render_file(scan: FileScan, baseline: frozenset[str]) -> list[str]:
    if scan.skipped is not None:
        return [f"{scan.path}: skipped: {scan.skipped}"]
    cached = ", cached" if scan.from_cache else ""
    lines = [f"{scan.path} ({scan.kind}, {_size(scan.code_bytes)} of code, {scan.functions:,} functions{cached})"]
    lines.extend(_needs(scan.required, scan.level, baseline))
    if scan.dispatched:
        lines.append("  dispatched (used only after a run-time CPU check):")
        lines.extend(_dispatched_lines(scan.dispatched))
    lines.extend(f"  note: {note}" for note in scan.notes)
    return lines


def render_text(report: ScanReport, baseline: frozenset[str]) -> str:
    lines: list[str] = []
    quiet = 0
    for scan in report.files:
        if scan.skipped in QUIET_SKIPS:
            quiet += 1
            continue
        lines.extend(render_file(scan, baseline))
    t = report.totals
    skipped = t.files_skipped - quiet
    summary = f"Total: {t.files_scanned} file{'s' if t.files_scanned != 1 else ''} scanned"
    extras = []
    if skipped:
        extras.append(f"{skipped} skipped")
    if quiet:
        extras.append(f"{quiet} not ELF")
    if extras:
        summary += f" ({', '.join(extras)})"
    if lines:
        lines.append("")
    lines.append(summary + f", {_size(t.code_bytes)} of code")
    if t.files_scanned:
        lines.extend(_needs_head([u for u in t.required if u.feature not in baseline], t.level))
        if t.models:
            lines.append(f"  oldest libvirt models offering it: {', '.join(t.models)}")
        if t.microarchitectures:
            lines.append(f"  oldest microarchitectures: {', '.join(t.microarchitectures)}")
        if t.dispatched:
            names = ", ".join(d.feature for d in t.dispatched)
            lines.extend(wrap(f"dispatched at run time, not needed: {names}", "  "))
    return "\n".join(lines) + "\n"


def render_json(report: ScanReport) -> str:
    data = report_to_dict(report)
    data["binaries"] = report_to_policy_binaries(report)
    return json.dumps(data, indent=2) + "\n"


def policy_section(report: ScanReport) -> dict[str, Any]:
    """A policy's ``binaries:``: without the x86-64 baseline features (``--format json`` has them)."""
    return {"binaries": without_baseline(report_to_policy_binaries(report))}


def render_yaml(report: ScanReport) -> str:
    import yaml

    header = "# cpuguard scan: what these binaries need from the CPU (a policy's binaries: section)\n"
    return header + yaml.safe_dump(policy_section(report), sort_keys=False, default_flow_style=False, width=100)
