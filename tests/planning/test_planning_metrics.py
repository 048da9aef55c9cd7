"""``cpuguard metrics``: Prometheus text format for node_exporter's textfile collector."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cpuguard.knowledge import Knowledge
from cpuguard.planning.load import facts_dates, load_fleet
from cpuguard.planning.matrix import compute_matrix
from cpuguard.planning.metrics import fleet_figures
from cpuguard.render.plan_metrics import render_metrics
from tests.conftest import EXAMPLE_POLICIES, run_cpuguard
from tests.planning.fleetfiles import copy_example

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({_NAME})(?:\{{{_LABEL}(?:,{_LABEL})*\}})? (-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)$")


def parse_exposition(text: str) -> dict[str, list[tuple[str, float]]]:
    """Check the text exposition format strictly; return samples per metric family."""
    assert text.endswith("\n")
    families: dict[str, list[tuple[str, float]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            assert current not in families, f"{current} appears twice"
            families[current] = []
        elif line.startswith("# TYPE "):
            assert line == f"# TYPE {current} gauge"
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            assert match.group(1) == current, "samples of a family must follow its HELP/TYPE"
            families[current].append((line.rsplit(" ", 1)[0], float(match.group(2))))
    return families


def test_example_fleet_metrics(tmp_path: Path) -> None:
    target = tmp_path / "textfile" / "cpuguard.prom"
    target.parent.mkdir()  # node_exporter's textfile directory exists; cpuguard never creates one
    result = run_cpuguard("metrics", "--policies", str(EXAMPLE_POLICIES), "--output", str(target))
    assert result.returncode == 0, result.stderr
    families = parse_exposition(target.read_text(encoding="utf-8"))
    samples = dict(families["cpuguard_vm_targets"])
    assert samples['cpuguard_vm_targets{vm="pbx01",move="live"}'] == 0
    assert samples['cpuguard_vm_targets{vm="pbx01",move="cold"}'] == 0
    assert samples['cpuguard_vm_targets{vm="db01",move="cold"}'] == 1
    assert samples['cpuguard_vm_targets{vm="ci01",move="live"}'] == 2
    # app01 is pinned live by its host-passthrough CPU only: a restart could go anywhere
    assert samples['cpuguard_vm_targets{vm="app01",move="live"}'] == 0
    assert samples['cpuguard_vm_targets{vm="app01",move="cold"}'] == 2
    # with the <cpu> cpuguard advise gives, app01 could move live to both; pbx01's binary keeps it
    advised = dict(families["cpuguard_vm_targets_advised"])
    assert advised['cpuguard_vm_targets_advised{vm="app01"}'] == 2
    assert advised['cpuguard_vm_targets_advised{vm="pbx01"}'] == 0
    assert advised['cpuguard_vm_targets_advised{vm="db01"}'] == 1
    info = dict(families["cpuguard_vm_info"])
    assert info['cpuguard_vm_info{vm="pbx01",host="new-node",mode="enforce"}'] == 1
    assert info['cpuguard_vm_info{vm="ci01",host="old-node",mode="enforce"}'] == 1
    assert len(info) == len(samples) / 2 and set(info.values()) == {1}
    assert families["cpuguard_vms_stranded"] == [("cpuguard_vms_stranded", 2.0)]
    assert dict(families["cpuguard_host_level"]) == {
        'cpuguard_host_level{host="mid-node"}': 3,
        'cpuguard_host_level{host="new-node"}': 4,
        'cpuguard_host_level{host="old-node"}': 2,
    }
    assert len(families["cpuguard_host_facts_age_seconds"]) == 3
    assert families["cpuguard_plan_problems"] == [("cpuguard_plan_problems", 0.0)]
    assert [p.name for p in target.parent.iterdir()] == ["cpuguard.prom"]  # no temporary file left behind


def test_ages_and_unreadable_hosts(tmp_path: Path, knowledge: Knowledge) -> None:
    policies = copy_example(tmp_path)
    (policies / "hosts" / "old-node.xml").write_text("not xml", encoding="utf-8")
    fleet = load_fleet(policies, knowledge)
    matrix = compute_matrix(list(fleet.vms.values()), fleet.hosts, knowledge, problems=fleet.problems)
    dates = facts_dates(fleet)
    now = max(d for d in dates.values() if d) + timedelta(hours=2)
    figures = fleet_figures(matrix, list(fleet.host_entries), dates, now)
    families = parse_exposition(render_metrics(figures))
    assert dict(families["cpuguard_host_facts_readable"])['cpuguard_host_facts_readable{host="old-node"}'] == 0
    assert 'cpuguard_host_level{host="old-node"}' not in dict(families["cpuguard_host_level"])
    ages = dict(families["cpuguard_host_facts_age_seconds"])
    assert 7200 <= ages['cpuguard_host_facts_age_seconds{host="new-node"}'] < 7300
    assert families["cpuguard_plan_problems"] == [("cpuguard_plan_problems", 1.0)]


def test_label_values_are_escaped(knowledge: Knowledge) -> None:
    from cpuguard.planning.metrics import FleetFigures, VmFigures

    figures = FleetFigures(
        (VmFigures('we"ird\\vm', "h\n1", 0, 1, "enforce"),), (), (), datetime(2026, 1, 1, tzinfo=UTC)
    )
    text = render_metrics(figures)
    assert 'cpuguard_vm_info{vm="we\\"ird\\\\vm",host="h\\n1",mode="enforce"} 1\n' in text
    parse_exposition(text)


def test_a_migration_or_a_mode_change_keeps_the_target_series() -> None:
    """Prometheus identifies a series by its labels: the target counts must keep theirs when a VM moves
    or its policy changes mode, so that alerts (for:) and history carry on; only the info series changes."""
    from cpuguard.planning.metrics import FleetFigures, VmFigures

    when = datetime(2026, 1, 1, tzinfo=UTC)
    before = FleetFigures((VmFigures("db01", "node1", 2, 3, "enforce"),), (), (), when)
    after = FleetFigures((VmFigures("db01", "node2", 2, 3, "warn"),), (), (), when)
    families = [parse_exposition(render_metrics(f)) for f in (before, after)]
    assert (
        families[0]["cpuguard_vm_targets"]
        == families[1]["cpuguard_vm_targets"]
        == [
            ('cpuguard_vm_targets{vm="db01",move="live"}', 2),
            ('cpuguard_vm_targets{vm="db01",move="cold"}', 3),
        ]
    )
    assert families[0]["cpuguard_vm_info"] == [('cpuguard_vm_info{vm="db01",host="node1",mode="enforce"}', 1)]
    assert families[1]["cpuguard_vm_info"] == [('cpuguard_vm_info{vm="db01",host="node2",mode="warn"}', 1)]
