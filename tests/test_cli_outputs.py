"""What a user sees through the command line: incomplete results said first, long answers that fit
a screen, and the smaller consistencies of issue 14 (items 3, 5 and 8)."""

from __future__ import annotations

import json
import shutil
from html import escape as html_escape
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_POLICIES, run_cpuguard
from tests.planning.chromium import DomIndex, Element


def test_a_junk_xml_host_file_says_what_it_was_taken_for_and_why_each_reader_refused(tmp_path: Path) -> None:
    foo = tmp_path / "foo.xml"
    foo.write_text("<foo/>\n")
    junk = tmp_path / "junk.xml"
    junk.write_text("junk\n")
    result = run_cpuguard("host", "show", str(foo))
    assert result.returncode == 2
    assert result.stderr == (
        f"cpuguard: error: {foo}: taken for libvirt XML (it starts with '<'), but not a libvirt capabilities "
        "or domcapabilities document: root element <foo>; not a /proc/cpuinfo copy: no 'processor' entries; "
        "not a cpuguard snapshot: does not start with '{'\n"
    )
    result = run_cpuguard("host", "show", str(junk))
    assert result.returncode == 2
    assert result.stderr == (
        f"cpuguard: error: {junk}: taken for libvirt XML (its name ends in .xml), but not a libvirt capabilities "
        "or domcapabilities document: does not start with '<'; not a /proc/cpuinfo copy: no 'processor' entries; "
        "not a cpuguard snapshot: does not start with '{'\n"
    )


def test_a_cpuinfo_copy_named_xml_is_still_read(tmp_path: Path) -> None:
    copy = tmp_path / "node.xml"
    copy.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu lm sse sse2\n")
    result = run_cpuguard("host", "show", str(copy), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["host"]["kind"] == "cpuinfo"


def _fleet_with_unreadable_mid_node(tmp_path: Path) -> Path:
    policies = tmp_path / "policies"
    shutil.copytree(EXAMPLE_POLICIES, policies)
    (policies / "hosts" / "mid-node.xml").write_text("<foo/>\n")
    return policies


MID_NODE_REFUSED = (
    "taken for libvirt XML (it starts with '<'), but not a libvirt capabilities or domcapabilities document: "
    "root element <foo>; not a /proc/cpuinfo copy: no 'processor' entries; not a cpuguard snapshot: "
    "does not start with '{'"
)


def test_evacuate_says_incomplete_first_and_undecided_for_want_of_facts(tmp_path: Path) -> None:
    policies = _fleet_with_unreadable_mid_node(tmp_path)
    result = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(policies))
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert lines[:6] == [
        "INCOMPLETE: 1 item could not be read; the plan covers the rest:",
        f"  host mid-node: {policies}/hosts/mid-node.xml: {MID_NODE_REFUSED}",
        "",
        "Evacuating new-node (live moves) to old-node (mid-node could not be read: left out): "
        "3 VMs, 0 stranded, 3 undecided",
        "  undecided (no target read takes them; mid-node might): app01, db01, pbx01",
        "",
    ]
    assert "UNDECIDED db01: no host read can take it (live); mid-node could not be read and might" in lines
    assert "  stranded by the workload: no target read offers what its software needs" in lines
    assert not any(line.startswith("INCOMPLETE") for line in lines[1:])  # said once, first

    markdown = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(policies), "--format", "markdown")
    assert markdown.returncode == 2
    assert markdown.stdout.splitlines()[:7] == [
        "**INCOMPLETE: 1 item could not be read; the plan covers the rest:**",
        "",
        # no raw HTML in Markdown: a viewer would take <foo> for a tag
        f"- host mid-node: {policies}/hosts/mid-node.xml: {html_escape(MID_NODE_REFUSED, quote=False)}",
        "",
        "## Evacuating `new-node` (live moves)",
        "",
        "Targets: old-node (mid-node could not be read: left out)",
    ]
    assert "**3 of 5 VMs" not in markdown.stdout
    assert (
        "**3 of 3 VMs are undecided:** `app01`, `db01`, `pbx01` -- no target read takes them; "
        "mid-node could not be read and might" in markdown.stdout
    )

    data = json.loads(
        run_cpuguard("plan", "evacuate", "new-node", "--policies", str(policies), "--format", "json").stdout
    )
    assert next(iter(data)) == "complete" and data["complete"] is False
    assert data["stranded"] == [] and data["undecided"] == ["app01", "db01", "pbx01"]
    assert data["dropped_targets"] == [
        {"host": "mid-node", "message": f"{policies}/hosts/mid-node.xml: {MID_NODE_REFUSED}"}
    ]
    assert {vm["vm"]: vm["unread_targets"] for vm in data["vms"]}["db01"] == ["mid-node"]


def test_evacuate_html_says_incomplete_first_in_chromium(tmp_path: Path) -> None:
    from tests.planning.chromium import DomIndex, dump_dom

    policies = _fleet_with_unreadable_mid_node(tmp_path)
    page = tmp_path / "evacuate.html"
    result = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(policies), "--report", str(page))
    assert result.returncode == 2
    dom = DomIndex(dump_dom(page))
    body = [e for e in dom.elements if e.tag in ("p", "h1", "h2", "ul")]
    assert body[0].attrs.get("id") == "incomplete"
    assert body[0].text == "INCOMPLETE: 1 item could not be read; the plan covers the rest:"
    assert body[1].text == f"host mid-node: {policies}/hosts/mid-node.xml: {MID_NODE_REFUSED}"
    assert body[2].text == "Evacuating new-node"
    assert body[3].text == "Live moves to old-node (mid-node could not be read: left out)."
    assert dom.find("h2", data_vm="db01")[0].text == (
        "db01 — undecided: no target read takes it; mid-node could not be read and might"
    )


def test_baseline_of_the_readable_hosts_says_incomplete_before_the_cpu(tmp_path: Path) -> None:
    junk = tmp_path / "junk.xml"
    junk.write_text("junk\n")
    old = EXAMPLE_POLICIES / "hosts" / "old-node.xml"
    result = run_cpuguard("baseline", str(old), str(junk))
    assert result.returncode == 2, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "INCOMPLETE: 1 item could not be read; the baseline covers the rest:",
        f"  host {junk}: taken for libvirt XML (its name ends in .xml), but not a libvirt capabilities or "
        "domcapabilities document: does not start with '<'; not a /proc/cpuinfo copy: no 'processor' entries; "
        "not a cpuguard snapshot: does not start with '{'",
        "",
        f"Baseline of 1 host: {old}",
    ]
    xml_at = lines.index("<cpu mode='custom' match='exact' check='partial'>")
    assert lines[xml_at - 1] == f"Guest CPU definition (domain XML) for the hosts read, not for {junk}:"
    assert result.stderr == ""
    # nothing readable at all: one line, exit 2
    alone = run_cpuguard("baseline", str(junk))
    assert alone.returncode == 2 and alone.stdout == ""
    assert (
        alone.stderr.startswith(f"cpuguard: error: host {junk}: taken for libvirt XML")
        and alone.stderr.count("\n") == 1
    )


def test_baseline_names_a_feature_libvirt_spells_differently_beside_the_xml() -> None:
    result = run_cpuguard("baseline")
    assert result.returncode == 0, result.stderr
    assert "  libvirt model: Westmere-IBRS + pclmulqdq (libvirt: pclmuldq)" in result.stdout.splitlines()
    assert "  <feature policy='require' name='pclmuldq'/>" in result.stdout.splitlines()


def test_check_says_the_vm_runs_there_already_and_has_no_policy() -> None:
    result = run_cpuguard("check", "vm", "ci01", "host", "old-node")
    assert result.returncode == 0
    assert result.stdout == (
        "ALLOW  ci01 can move to old-node (live migration or memory-image restore)\n"
        "  levels: ci01 uses features up to x86-64-v2; old-node offers all of x86-64-v2\n"
        "  live rule: the host must offer every feature the running guest sees now, plus\n"
        "    what its CPU definition and workload need\n"
        "  note: ci01 already runs on old-node\n"
        "  note: ci01 has no policy, so nothing declares what its workload needs\n"
        "  host facts: capabilities:policies/hosts/old-node.xml\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("metrics", "--output"),
        ("host", "snapshot", "--from", "model:Westmere", "--output"),
    ],
)
def test_an_output_into_a_missing_directory_is_refused_not_created(tmp_path: Path, args: tuple[str, ...]) -> None:
    target = tmp_path / "no" / "such" / "dir" / "out"
    result = run_cpuguard(*args, str(target))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"cpuguard: error: {target}: directory does not exist: {target.parent}\n"
    assert not (tmp_path / "no").exists()


def test_the_example_units_that_write_a_snapshot_create_its_directory() -> None:
    from tests.conftest import ROOT

    service = (ROOT / "examples" / "systemd" / "cpuguard-snapshot.service").read_text()
    assert "--output /var/lib/cpuguard/host.json" in service
    assert "StateDirectory=cpuguard\n" in service
    playbook = (ROOT / "examples" / "ansible" / "cpuguard.yml").read_text()
    make = playbook.index('path: "{{ cpuguard_state_dir }}"\n        state: directory')
    assert make < playbook.index("--output {{ cpuguard_state_dir }}/host.json")


def test_check_groups_a_long_list_by_level_and_fits_80_columns() -> None:
    result = run_cpuguard("check", "vm", "pbx01", "host", "old-node")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    start = lines.index("    avx2, bmi2")
    assert lines[start : start + 5] == [
        "    avx2, bmi2",
        "        <- policy policies/vms/pbx01.yaml",
        "    what x86-64-v3 and x86-64-v4 add, plus 3dnowprefetch, adx, clflushopt, clwb,",
        "      erms, fsgsbase, hle, invpcid, mpx, pcid, pdpe1gb, rdrand, rdseed, rdtscp,",
        "      rtm, smap, smep, vme, xgetbv1, xsavec, xsaveopt",
    ]
    assert max(len(line) for line in lines) <= 80 and len(lines) <= 25
    # the full list: --verbose, and JSON
    verbose = run_cpuguard("check", "vm", "pbx01", "host", "old-node", "--verbose").stdout.splitlines()
    start = verbose.index("        <- policy policies/vms/pbx01.yaml") + 1
    assert verbose[start : start + 2] == [
        "    3dnowprefetch, abm, adx, avx, avx2, avx512bw, avx512cd, avx512dq, avx512f,",
        "      avx512vl, bmi1, bmi2, clflushopt, clwb, erms, f16c, fma, fsgsbase, hle,",
    ]
    data = json.loads(run_cpuguard("check", "vm", "pbx01", "host", "old-node", "--format", "json").stdout)
    assert len(data["missing"]) == 35


def test_host_show_is_a_few_lines_and_lists_all_with_verbose() -> None:
    result = run_cpuguard("host", "show", "new-node")
    assert result.returncode == 0
    assert result.stdout.splitlines()[-5:] == [
        "  73 features: all of x86-64-v4, plus 3dnowprefetch, adx, aes, apic, arat,",
        "    clflush, clflushopt, clwb, de, erms, fsgsbase, hle, hypervisor, invpcid,",
        "    mca, mce, mpx, msr, mtrr, nx, pae, pat, pcid, pclmulqdq, pdpe1gb, pge, pse,",
        "    pse36, rdrand, rdseed, rdtscp, rtm, sep, smap, smep, spec_ctrl, tsc",
        "    and 6 more (--verbose or --format json lists all 73)",
    ]
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    verbose = run_cpuguard("host", "show", "new-node", "--verbose").stdout
    assert "  73 features: 3dnowprefetch, abm, adx, aes," in verbose and verbose.rstrip().endswith("xsaveopt")
    assert "xsavec, xsaveopt" in verbose  # comma and space, as everywhere in text output


@pytest.mark.parametrize(
    ("args", "most"),
    [
        (("check", "vm", "pbx01", "host", "old-node"), 25),
        (("check", "vm", "db01", "host", "old-node"), 20),
        (("host", "show", "new-node"), 12),
        (("plan", "evacuate", "new-node"), 75),
        (("plan", "matrix"), 35),
        (("baseline",), 20),
        (("advise", "pbx01"), 45),
        (("advise", "--all"), 110),  # five VMs, about 20 lines each
    ],
)
def test_the_example_fleets_longest_answers_fit_a_screen(args: tuple[str, ...], most: int) -> None:
    result = run_cpuguard(*args)
    assert result.returncode in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    # headlines and origins ("<- ...") stay whole, to be found by grep; they are short on this fleet
    long = [line for line in lines if len(line) > 80]
    assert all(len(line) <= 100 and (not line.startswith(" ") or "<- " in line) for line in long), long
    assert len(lines) <= most


def test_the_html_plan_puts_each_reason_in_its_own_column(tmp_path: Path) -> None:
    from tests.planning.chromium import dump_dom

    page = tmp_path / "evacuate.html"
    result = run_cpuguard("plan", "evacuate", "new-node", "--report", str(page))
    assert result.returncode == 1
    dom = DomIndex(dump_dom(page))
    assert [e.text for e in dom.find("th")][:3] == ["Target", "Live move", "Cold move"]
    assert not any(e.text == "Why not" for e in dom.find("th"))
    row = dom.find("tr", data_vm="pbx01", data_host="mid-node")[0]
    live, cold = _cells(dom, row)[1:3]
    assert live.text.startswith("no") and "the running guest sees it now" in live.text
    assert cold.text.startswith("no") and "the running guest sees it now" not in cold.text
    assert "needed by /usr/sbin/asterisk" in cold.text
    app01 = dom.find("tr", data_vm="app01", data_host="old-node")[0]
    assert [e.text for e in _cells(dom, app01)][2] == "ok"  # cold: ok, no reasons beside it


def _cells(dom: DomIndex, row: Element) -> list[Element]:
    """The <td> elements of ``row``, in order."""
    elements = dom.elements
    cells: list[Element] = []
    for element in elements[elements.index(row) + 1 :]:
        if element.tag == "tr":
            break
        if element.tag == "td":
            cells.append(element)
    return cells


def test_audit_show_on_a_fresh_config_is_an_empty_log(tmp_path: Path) -> None:
    """Before the hook's first decision the config's audit log does not exist: nothing to show, not
    an error (issue 14 item 8). A --log that does not exist stays bad input."""
    log = tmp_path / "log" / "audit.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(f"audit_log: {log}\n")
    text = run_cpuguard("audit", "show", "--config", str(config))
    assert (text.returncode, text.stdout, text.stderr) == (0, f"no audit entries yet ({log} does not exist)\n", "")
    as_json = run_cpuguard("audit", "show", "--config", str(config), "--format", "json")
    assert (as_json.returncode, as_json.stdout, as_json.stderr) == (0, "", "")
    named = run_cpuguard("audit", "show", "--log", str(log))
    assert named.returncode == 2
    assert named.stderr == f"cpuguard: error: {log}: no audit log yet (the hook writes it at its first decision)\n"


def test_advise_headlines_fit_80_columns_and_verbose_names_every_feature() -> None:
    result = run_cpuguard("advise", "--all")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    start = lines.index("app01 on new-node: pinned by configuration:")
    assert lines[start + 1] == "    the advised <cpu> opens mid-node, old-node"
    start = lines.index("pbx01 on new-node: stranded by the workload:")
    assert lines[start + 1] == "    no other host offers what its software needs"

    grouped = run_cpuguard("advise", "app01").stdout.splitlines()
    verbose = run_cpuguard("advise", "app01", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    policy = EXAMPLE_POLICIES / "vms" / "app01.yaml"
    start = grouped.index("  workload needs (x86-64-v2):")
    assert grouped[start + 1 : start + 3] == [
        "    all of x86-64-v2",
        f"        <- level x86-64-v2 required by policy {policy.relative_to(EXAMPLE_POLICIES.parent)}",
    ]
    lines = verbose.stdout.splitlines()
    assert lines[start + 1 : start + 4] == [
        "    cmov, cx16, cx8, fpu, fxsr, lahf_lm, lm, mmx, pni, popcnt, sse, sse2,",
        "      sse4_1, sse4_2, ssse3, syscall",
        f"        <- level x86-64-v2 required by policy {policy.relative_to(EXAMPLE_POLICIES.parent)}",
    ]
    assert lines[:start] == grouped[:start] and lines[start + 4 :] == grouped[start + 3 :]
