"""JSON documents for planning reports (format in docs/planning.md, an interface).

Every document has ``cpuguard_report`` (format version), ``kind`` and
``complete``; problems are listed under ``problems``. The matrix is written
by classes (hosts with identical CPUs, VMs with identical needs) so that a
fleet of 10,000 VMs and 1,000 hosts stays a few megabytes.
"""

from __future__ import annotations

import json
from typing import Any

from cpuguard.planning.matrix import Matrix
from cpuguard.planning.records import Baseline, EvacuationPlan, Problem
from cpuguard.render.advice_text import advised_cpu_xml
from cpuguard.render.jsonout import to_data
from cpuguard.render.plan_text import baseline_xml

REPORT_VERSION = 1


def _problems(problems: tuple[Problem, ...]) -> list[dict[str, Any]]:
    return [{"kind": p.kind, "name": p.name, "message": p.message, "hosts": list(p.hosts)} for p in problems]


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def evacuation_data(plan: EvacuationPlan) -> dict[str, Any]:
    return {
        "cpuguard_report": REPORT_VERSION,
        "kind": "evacuation",
        "host": plan.host,
        "host_level": plan.source_level,
        "move": plan.move.value,
        "targets": list(plan.targets),
        "complete": plan.complete,
        "stranded": [v.vm for v in plan.stranded],
        "undecided": [v.vm for v in plan.undecided],
        "dropped_targets": [{"host": p.name, "message": p.message} for p in plan.dropped],
        "stranded_by_configuration": [v.vm for v in plan.stranded_by("configuration")],
        "stranded_by_workload": [v.vm for v in plan.stranded_by("workload")],
        "evacuable_after_reconfiguration": plan.evacuable_after_reconfiguration,
        "vms": [
            {
                "vm": vm.vm,
                "stranded": vm.stranded,
                "undecided": vm.undecided,
                "unread_targets": list(vm.unread),
                "safe_targets": list(vm.safe),
                "cold_only_targets": list(vm.cold_only),
                "policy_mode": vm.policy_mode,
                "level": vm.level,
                "stranded_by": vm.stranded_by,
                "advised_cpu_xml": advised_cpu_xml(vm.advised) if vm.advised is not None else None,
                "advised_targets": list(vm.advised_targets),
                "workload_missing": {m.feature: [o.detail for o in m.origins] for m in vm.workload_missing},
                "notes": list(vm.notes),
                "candidates": [
                    {"host": c.host, "live": to_data(c.live), "cold": to_data(c.cold)} for c in vm.candidates
                ],
            }
            for vm in plan.vms
        ],
        "problems": _problems(plan.problems),
    }


def render_evacuation_json(plan: EvacuationPlan) -> str:
    return _dump(evacuation_data(plan))


def matrix_data(matrix: Matrix) -> dict[str, Any]:
    need_rejections: dict[int, list[dict[str, Any]]] = {}
    for (need, host_class), cell in sorted(matrix.cells.items()):
        need_rejections.setdefault(need, []).append(
            {
                "host_class": host_class,
                "missing": list(cell.missing),
                "forbidden": list(cell.forbidden),
                "problems": list(cell.problems),
            }
        )
    return {
        "cpuguard_report": REPORT_VERSION,
        "kind": "matrix",
        "complete": matrix.complete,
        "stranded": [v.name for v in matrix.stranded],
        "stranded_by_configuration": [
            v.name for v in matrix.stranded if matrix.stranded_by.get(v.name) == "configuration"
        ],
        "stranded_by_workload": [v.name for v in matrix.stranded if matrix.stranded_by.get(v.name) == "workload"],
        "hosts": [
            {"name": name, "class": matrix.host_class[i], "level": matrix.host_classes[matrix.host_class[i]].level}
            for i, name in enumerate(matrix.hosts)
        ],
        "vms": [
            {
                "name": vm.name,
                "host": vm.host,
                "live_class": vm.live,
                "cold_class": vm.cold,
                "live_targets": vm.live_targets,
                "cold_targets": vm.cold_targets,
                "policy_mode": vm.mode,
                "notes": list(vm.notes),
            }
            for vm in matrix.vms
        ],
        "host_classes": [
            {
                "id": c.index,
                "arch": c.arch,
                "vendor": c.vendor,
                "level": c.level,
                "features": len(c.flags),
                "hosts": list(c.hosts),
            }
            for c in matrix.host_classes
        ],
        "need_classes": [
            {
                "id": c.index,
                "move": c.move.value,
                "arch": c.arch,
                "vendor": c.vendor,
                "level": c.level,
                "features": sorted(c.features),
                "forbidden": sorted(c.forbidden),
                "accepting_host_classes": [
                    h.index for h in matrix.host_classes if (c.index, h.index) not in matrix.cells
                ],
                "rejected_by": need_rejections.get(c.index, []),
            }
            for c in matrix.need_classes
        ],
        "problems": _problems(matrix.problems),
    }


def _dump_by_line(data: dict[str, Any]) -> str:
    """One top-level key a line, one list item a line, each compact: still readable and
    diffable, and written by json's C encoder (``indent`` switches to the pure-Python one,
    seconds for a matrix of 10,000 VMs)."""
    parts = []
    for key in sorted(data):
        value = data[key]
        if isinstance(value, list) and value:
            items = ",\n    ".join(json.dumps(item, sort_keys=True) for item in value)
            parts.append(f"  {json.dumps(key)}: [\n    {items}\n  ]")
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def render_matrix_json(matrix: Matrix) -> str:
    return _dump_by_line(matrix_data(matrix))


def baseline_data(baseline: Baseline) -> dict[str, Any]:
    return {
        "cpuguard_report": REPORT_VERSION,
        "kind": "baseline",
        "complete": not baseline.problems,
        "hosts": list(baseline.hosts),
        "arch": baseline.arch,
        "vendor": baseline.vendor,
        "vendors": list(baseline.vendors),
        "level": baseline.level,
        "model": baseline.model,
        "extra": list(baseline.extra),
        "disabled": list(baseline.disabled),
        "hypervisor_provided": list(baseline.hypervisor_provided),
        "libvirt_spelling": dict(baseline.libvirt_spelling),
        "guest_features": sorted(baseline.guest_features),
        "common_features": sorted(baseline.common),
        "held_back": [{"hosts": list(hosts), "features": list(features)} for hosts, features in baseline.held_back],
        "cpu_xml": baseline_xml(baseline),
        "notes": list(baseline.notes),
        "problems": _problems(baseline.problems),
    }


def render_baseline_json(baseline: Baseline) -> str:
    return _dump(baseline_data(baseline))
