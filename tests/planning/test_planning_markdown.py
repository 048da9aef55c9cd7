"""Markdown reports: what a CI job summary or a ticket shows."""

from __future__ import annotations

from tests.conftest import EXAMPLE_POLICIES, run_cpuguard


def test_evacuation_markdown() -> None:
    result = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(EXAMPLE_POLICIES), "--format", "markdown")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[:6] == [
        "## Evacuating `new-node` (live moves)",
        "",
        "**2 of 3 VMs have no safe target:** `app01`, `pbx01`",
        "",
        "| VM | Safe targets | Cold move only | Why not |",
        "| --- | --- | --- | --- |",
    ]
    assert lines[6].startswith("| `app01` | **none** | mid-node, old-node | mid-node: missing 3dnowprefetch, adx,")
    assert lines[7].startswith("| `pbx01` | **none** | - | mid-node: missing 3dnowprefetch, adx, avx512bw,")
    assert "<br>old-node: missing " in lines[7]
    assert lines[8].startswith("| `db01` | mid-node | - | old-node: missing abm, avx,")
    start = lines.index("### Stranded by configuration: a new `<cpu>` frees them at their next cold boot")
    assert lines[start + 1 : start + 9] == [
        "",
        "`app01` could then go to mid-node, old-node:",
        "",
        "```xml",
        "<cpu mode='custom' match='exact' check='partial'>",
        "  <model fallback='forbid'>Westmere-IBRS</model>",
        "</cpu>",
        "```",
    ]
    start = lines.index("### Stranded by the workload: no target offers what its software needs")
    assert lines[start + 2].startswith(
        "- `pbx01`: avx512bw (needed by /usr/sbin/asterisk (6 instructions in 2 functions)); avx512f ("
    )


def test_matrix_markdown() -> None:
    result = run_cpuguard("plan", "matrix", "--policies", str(EXAMPLE_POLICIES), "--format", "markdown")
    lines = result.stdout.splitlines()
    assert "**No host to move to live:** `app01`, `pbx01`" in lines
    assert "- stranded by configuration: `app01` -- a new `<cpu>` frees it (`cpuguard advise`)" in lines
    assert "- stranded by the workload: `pbx01`" in lines
    assert "| `app01` | cold | here | cold |" in lines  # pinned live by host-passthrough alone
    assert "| `pbx01` | **no** | here | **no** |" in lines  # neither live nor after a shutdown
    assert "| `ci01` | ok | ok | here |" in lines


def test_baseline_markdown_has_the_cpu_snippet() -> None:
    result = run_cpuguard("baseline", "--policies", str(EXAMPLE_POLICIES), "--format", "markdown")
    assert result.returncode == 0
    assert "```xml\n<cpu mode='custom' match='exact' check='partial'>\n" in result.stdout
    assert "| libvirt model | Westmere-IBRS + pclmulqdq (libvirt: pclmuldq) |" in result.stdout
