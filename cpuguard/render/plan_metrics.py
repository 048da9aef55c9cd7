"""Prometheus text exposition format (version 0.0.4), for node_exporter's
textfile collector: https://prometheus.io/docs/instrumenting/exposition_formats/"""

from __future__ import annotations

from cpuguard.planning.metrics import FleetFigures


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_metrics(figures: FleetFigures) -> str:
    out: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")

    # Only labels that stay with the VM: where it runs and its policy mode change with a migration or an
    # edit, and a series whose labels change is a new series to Prometheus (an alert's "for:" restarts,
    # rates and history break). Those go into an info metric to join on vm:
    # https://prometheus.io/docs/practices/naming/#labels and
    # https://prometheus.io/docs/concepts/metric_types/ ("info" metrics in OpenMetrics).
    family(
        "cpuguard_vm_targets",
        "Other hosts that could take the VM, by kind of move (live migration or cold restart).",
        [
            ({"vm": v.vm, "move": move}, count)
            for v in figures.vms
            for move, count in (("live", v.live_targets), ("cold", v.cold_targets))
        ],
    )
    family(
        "cpuguard_vm_targets_advised",
        "Other hosts that could take the VM, live or cold, once it has booted with the CPU definition "
        "cpuguard advise gives it (the gain over cpuguard_vm_targets is what its CPU configuration costs).",
        [({"vm": v.vm}, v.targets_after) for v in figures.vms if v.targets_after is not None],
    )
    family(
        "cpuguard_vm_info",
        "Always 1: where the VM runs (inventory) and its policy mode; join on vm.",
        [({"vm": v.vm, "host": v.host, "mode": v.mode}, 1) for v in figures.vms],
    )
    family("cpuguard_vms_stranded", "VMs that no other host could take by a live move.", [({}, figures.stranded)])
    family(
        "cpuguard_host_facts_readable",
        "1 when the host's CPU facts could be read, 0 when not (see cpuguard plan matrix).",
        [({"host": h.host}, 1 if h.readable else 0) for h in figures.hosts],
    )
    family(
        "cpuguard_host_level",
        "x86-64 psABI level of the host CPU (1-4 for x86-64-v1..v4, 0 below v1).",
        [({"host": h.host}, h.level) for h in figures.hosts if h.level is not None],
    )
    family(
        "cpuguard_host_facts_age_seconds",
        "Age of the host's CPU facts (snapshot date, else the facts file's modification time).",
        [({"host": h.host}, round(h.age_seconds, 3)) for h in figures.hosts if h.age_seconds is not None],
    )
    family(
        "cpuguard_guest_scan_age_seconds",
        "Age of the VM's stored guest scan (cpuguard inventory scan-guests); alert when it grows stale.",
        [({"vm": vm}, round(age, 3)) for vm, age in figures.guest_scan_ages],
    )
    family(
        "cpuguard_plan_problems",
        "Inventory items that could not be read; while above 0 the figures are incomplete.",
        [({}, len(figures.problems))],
    )
    family(
        "cpuguard_metrics_generated_timestamp_seconds",
        "When these figures were computed (Unix time).",
        [({}, round(figures.generated.timestamp(), 3))],
    )
    return "\n".join(out) + "\n"
