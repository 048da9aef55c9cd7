"""The HTML reports, rendered in a real headless Chromium: DOM and screenshot."""

from __future__ import annotations

import random
from pathlib import Path

from cpuguard.knowledge import Knowledge
from cpuguard.planning.matrix import compute_matrix
from cpuguard.records import Move
from cpuguard.render.html import render_matrix_html
from tests.conftest import EXAMPLE_POLICIES, run_cpuguard
from tests.planning.chromium import DomIndex, colour_count, dump_dom, png_pixels, screenshot
from tests.planning.fleetfiles import copy_example
from tests.planning.randomfleet import random_hosts, random_vms

RED, GREEN, AMBER = (0xF6, 0xB8, 0xB8), (0xC9, 0xEF, 0xC9), (0xFB, 0xE3, 0xA6)


def _report(tmp_path: Path, *args: str, policies: Path = EXAMPLE_POLICIES) -> Path:
    page = tmp_path / "report.html"
    result = run_cpuguard(*args, "--policies", str(policies), "--report", str(page), "--format", "json")
    assert result.returncode in (0, 1), result.stderr
    return page


def _with_spare_skylake_server(tmp_path: Path) -> Path:
    """The example fleet plus a host of libvirt's Skylake-Server-IBRS model: AVX-512 but no
    clflushopt, so pbx01 could start there after a shutdown but not move there live."""
    policies = copy_example(tmp_path)
    inventory = policies / "inventory.yaml"
    text = inventory.read_text(encoding="utf-8")
    inventory.write_text(text.replace("vms:\n", "  spare: {source: 'model:Skylake-Server-IBRS'}\nvms:\n", 1))
    return policies


def test_matrix_report_renders_with_colours_and_reasons(tmp_path: Path) -> None:
    page = _report(tmp_path, "plan", "matrix", policies=_with_spare_skylake_server(tmp_path))
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html and "http" not in html.split("<body>")[1]  # self-contained
    dom = DomIndex(dump_dom(page))
    # spare has the AVX-512 pbx01's Asterisk needs: only its host-passthrough CPU keeps it off live
    assert dom.find("p", id="summary")[0].text == (
        "2 of 5 VMs have no host to move to live: app01, pbx01 (stranded by configuration: app01, pbx01)"
    )
    cells = {(c.attrs["data-vm"], c.attrs["data-host"]): c for c in dom.find("td") if "data-vm" in c.attrs}
    assert len(cells) == 20
    mid = cells[("pbx01", "mid-node")]
    # the Asterisk build's AVX-512 rules out mid-node even after a shutdown
    assert mid.attrs["class"] == "no" and mid.attrs["data-live"] == "no" and mid.attrs["data-cold"] == "no"
    assert "avx512f" in mid.text and mid.text.startswith("no")
    spare = cells[("pbx01", "spare")]
    assert spare.attrs["class"] == "cold" and spare.attrs["data-live"] == "no" and spare.attrs["data-cold"] == "ok"
    assert "clflushopt" in spare.text and spare.text.startswith("cold")
    assert cells[("pbx01", "old-node")].attrs["class"] == "no"
    assert cells[("pbx01", "new-node")].attrs["class"] == "here"
    assert cells[("web01", "old-node")].attrs["class"] == "ok"

    png = screenshot(page, tmp_path / "matrix.png")
    width, height, _rows = png_pixels(png)
    assert (width, height) == (1200, 900)
    # the colours the CSS gives the cells really reach the screen
    assert colour_count(png, RED) > 2000
    assert colour_count(png, GREEN) > 2000
    assert colour_count(png, AMBER) > 8000  # the legend's swatch alone has about 3,000 amber pixels


def test_evacuation_report_renders(tmp_path: Path) -> None:
    page = _report(tmp_path, "plan", "evacuate", "new-node")
    dom = DomIndex(dump_dom(page))
    assert dom.find("h1")[0].text == "Evacuating new-node"
    assert "2 of 3 VMs have no safe target: app01, pbx01" in dom.find("p", id="summary")[0].text
    heading = dom.find("h2", data_vm="pbx01")[0]
    assert heading.attrs["data-stranded"] == "true"
    rows = dom.find("tr", data_vm="pbx01")
    assert [(r.attrs["data-host"], r.attrs["data-live"], r.attrs["data-cold"]) for r in rows] == [
        ("mid-node", "no", "no"),
        ("old-node", "no", "no"),
    ]
    assert "After a shutdown (cold move) no target could start it either." in [p.text for p in dom.find("p")]
    assert "the running guest sees it now (host-passthrough on new-node)" in rows[0].text
    assert "needed by /usr/sbin/asterisk (2 instructions in 1 function)" in rows[0].text
    assert dom.find("h2", data_vm="db01")[0].attrs["data-stranded"] == "false"
    causes = {p.attrs["data-cause"]: p.text for p in dom.find("p") if "data-cause" in p.attrs}
    assert causes["configuration"] == (
        "Stranded by configuration: with the advised <cpu> it could go to mid-node, old-node from its next cold boot."
    )
    assert causes["workload"].startswith(
        "Stranded by the workload: no target offers what its software needs: "
        "avx512bw (needed by /usr/sbin/asterisk (6 instructions in 2 functions));"
    )
    assert "<model fallback='forbid'>Westmere-IBRS</model>" in dom.find("pre")[0].text
    png = screenshot(page, tmp_path / "evacuate.png")
    assert colour_count(png, RED) > 1000


def test_baseline_report_renders(tmp_path: Path) -> None:
    page = _report(tmp_path, "baseline")
    dom = DomIndex(dump_dom(page))
    cpu = dom.find("pre", id="cpu-xml")[0].text
    assert "<model fallback='forbid'>Westmere-IBRS</model>" in cpu
    assert "<feature policy='require' name='pclmuldq'/>" in cpu
    table = dom.find("table", id="baseline")[0].text
    assert "x86-64-v2" in table and "Westmere-IBRS + pclmulqdq" in table and "arat" not in table
    features = [line.strip() for line in cpu.splitlines() if "<feature" in line]
    assert features == ["<feature policy='require' name='pclmuldq'/>"]


def test_large_matrix_is_drawn_between_classes(knowledge: Knowledge) -> None:
    rng = random.Random(7)
    hosts = random_hosts(rng, knowledge, 30)
    vms = random_vms(rng, knowledge, hosts, 80)
    matrix = compute_matrix(vms, hosts, knowledge)
    dom = DomIndex(render_matrix_html(matrix, cell_limit=100))
    assert dom.find("table", id="matrix") == []
    rows = [r for r in dom.elements if r.tag == "tr"]
    live_classes = [c for c in matrix.need_classes if c.move is Move.LIVE]
    assert len(rows) == 1 + len(live_classes)
    cells = [c for c in dom.elements if c.tag == "td" and c.attrs.get("class") in ("ok", "no")]
    assert len(cells) == len(live_classes) * len(matrix.host_classes)
    assert sum(1 for c in cells if c.attrs["class"] == "no") == sum(
        1 for (n, _h) in matrix.cells if matrix.need_classes[n].move is Move.LIVE
    )
