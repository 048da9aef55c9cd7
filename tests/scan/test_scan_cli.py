"""``cpuguard scan`` end to end, the way a user runs it (cli.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cpuguard.errors import BadInput
from cpuguard.scan.output import merge_into_policy
from tests.conftest import ROOT, run_cpuguard
from tests.scan.conftest import Built


def test_text_output(corpus: dict[str, Built], tmp_path: Path) -> None:
    path = corpus["kernels-haswell"].path
    done = run_cpuguard("scan", "--cache-dir", str(tmp_path), str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{path} (pie-executable, ")
    assert lines[1] == "  needs x86-64-v3: abm, avx, avx2, bmi1, bmi2, fma, movbe, popcnt"
    assert any(line.startswith("    fma ") and line.endswith("e.g. saxpy.constprop.0") for line in lines)
    assert "Total: 1 file scanned, " in done.stdout
    assert "  oldest microarchitectures: haswell" in done.stdout


def test_dispatched_features_are_explained(corpus: dict[str, Built], tmp_path: Path) -> None:
    done = run_cpuguard("scan", "--no-cache", str(corpus["supports"].path))
    assert done.returncode == 0, done.stderr
    assert "  needs x86-64-v1: nothing beyond the x86-64 baseline" in done.stdout
    assert "    popcnt (medium): count_hw.constprop.0 is used only after the CPU check in main" in done.stdout


def test_nothing_scannable_is_exit_2_with_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    done = run_cpuguard("scan", "--no-cache", str(text))
    assert done.returncode == 2
    assert done.stderr == "cpuguard: error: nothing could be scanned (not an ELF file)\n"


def test_one_bad_file_among_good_ones_is_exit_0(corpus: dict[str, Built], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_bytes(corpus["kernels-x86-64"].path.read_bytes()[:100])
    done = run_cpuguard("scan", "--no-cache", str(broken), str(corpus["kernels-x86-64"].path))
    assert done.returncode == 0
    assert f"{broken}: skipped: " in done.stdout


def test_json_and_yaml(corpus: dict[str, Built], tmp_path: Path) -> None:
    path = str(corpus["clones"].path)
    as_json = run_cpuguard("scan", "--no-cache", "--format", "json", path)
    report = json.loads(as_json.stdout)
    assert report["files"][0]["path"] == path and report["binaries"][0]["path"] == path
    assert report["totals"]["level"] == "x86-64-v1"
    out = tmp_path / "binaries.yaml"
    as_yaml = run_cpuguard("scan", "--no-cache", "--format", "yaml", "--output", str(out), path)
    assert as_yaml.returncode == 0 and as_yaml.stdout == ""
    section = yaml.safe_load(out.read_text())["binaries"]
    assert section[0]["path"] == path
    assert "avx2" in {d["feature"] for d in section[0]["dispatched"]}


def test_merged_scan_results_drive_check(corpus: dict[str, Built], tmp_path: Path) -> None:
    """A scan merged into a VM's policy shows up in `check` as needs of that binary."""
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    binary = corpus["kernels-haswell"].path
    merged = run_cpuguard("scan", "--no-cache", "--merge-into", str(policies / "vms" / "pbx01.yaml"), str(binary))
    assert merged.returncode == 0, merged.stderr
    assert merged.stderr == f"merged 1 binary into {policies / 'vms' / 'pbx01.yaml'}\n"
    check = run_cpuguard("check", "vm", "pbx01", "host", "model:Westmere", "--policies", str(policies))
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"needed by {binary} (" in check.stdout
    again = run_cpuguard("scan", "--no-cache", "--merge-into", str(policies / "vms" / "pbx01.yaml"), str(binary))
    assert again.returncode == 0
    section = yaml.safe_load((policies / "vms" / "pbx01.yaml").read_text())["binaries"]
    # the example's /usr/sbin/asterisk entry stays; the new binary's entry is replaced, not duplicated
    assert [entry["path"] for entry in section] == ["/usr/sbin/asterisk", str(binary)]


def test_a_missing_path_on_the_command_line_is_exit_2(corpus: dict[str, Built], tmp_path: Path) -> None:
    """A typo must not let a CI gate pass: a path the user named that does not exist is bad input."""
    good = str(corpus["kernels-x86-64"].path)
    typo = str(tmp_path / "lss")
    scanned = run_cpuguard("scan", "--no-cache", good, typo)
    assert scanned.returncode == 2
    assert scanned.stderr == f"cpuguard: error: {typo}: no such file\n"
    checked = run_cpuguard("check", "binary", good, typo, "host", "old-node", "--no-cache")
    assert checked.returncode == 2
    assert (checked.stdout, checked.stderr) == ("", f"cpuguard: error: {typo}: no such file\n")


def test_non_elf_files_inside_a_directory_are_one_note(corpus: dict[str, Built], tmp_path: Path) -> None:
    tree = tmp_path / "sbin"
    tree.mkdir()
    shutil.copy(corpus["kernels-x86-64"].path, tree / "prog")
    for name in ("a-script", "b-script", "c-script"):
        (tree / name).write_text("#!/bin/sh\nexit 0\n")
    checked = run_cpuguard("check", "binary", str(tree), "host", "old-node", "--no-cache")
    assert checked.returncode == 0, checked.stderr
    notes = [line for line in checked.stdout.splitlines() if line.startswith("  note:")]
    assert notes == ["  note: skipped 3 files that are not ELF"]


def test_the_headline_counts_only_the_binaries_that_cannot_run(corpus: dict[str, Built], tmp_path: Path) -> None:
    """Two copies of a Haswell build and one baseline build: 2 of 3 cannot run on Westmere, and
    each missing feature is listed once with both programs that need it."""
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copy(corpus["kernels-haswell"].path, first)
    shutil.copy(corpus["kernels-haswell"].path, second)
    baseline = corpus["kernels-x86-64"].path
    done = run_cpuguard("check", "binary", str(first), str(second), str(baseline), "host", "old-node", "--no-cache")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "BLOCK  2 of 3 binaries cannot run on old-node"
    assert lines[1].startswith("  old-node lacks ") and lines[1].endswith(" 2 of 3 binaries need:")
    feature_lines = [line for line in lines if line.startswith("    ") and not line.startswith("        ")]
    features = [f for line in feature_lines for f in line.strip().split(", ")]
    assert len(features) == len(set(features)), done.stdout  # each feature once
    avx2 = lines.index(next(line for line in feature_lines if "avx2" in line.strip().split(", ")))
    assert lines[avx2 + 1].startswith(f"        <- needed by {first} (")
    assert lines[avx2 + 2].startswith(f"        <- needed by {second} (")


def test_merge_into_a_policy_of_no_known_vm_is_refused(corpus: dict[str, Built], tmp_path: Path) -> None:
    """A typo (pbx1 for pbx01) must not leave an orphan policy that nothing ever reads."""
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    typo = policies / "vms" / "pbx1.yaml"
    done = run_cpuguard("scan", "--no-cache", "--merge-into", str(typo), str(corpus["kernels-x86-64"].path))
    assert done.returncode == 2
    assert (done.stdout, done.stderr) == (
        "",
        f"cpuguard: error: {typo}: no VM pbx1 in the inventory (did you mean pbx01?)\n",
    )
    assert not typo.exists()


def test_merge_into_a_new_policy_of_an_inventory_vm_names_it(corpus: dict[str, Built], tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "vms" / "db01.yaml").unlink()
    binary = str(corpus["kernels-x86-64"].path)
    done = run_cpuguard("scan", "--no-cache", "--merge-into", str(policies / "vms" / "db01.yaml"), binary)
    assert done.returncode == 0, done.stderr
    data = yaml.safe_load((policies / "vms" / "db01.yaml").read_text())
    assert data["vm"] == "db01" and [entry["path"] for entry in data["binaries"]] == [binary]


def test_a_new_policy_for_a_scanned_guest_takes_its_name(tmp_path: Path) -> None:
    """scan --guest --merge-into: the guest read from a domain XML may be in no inventory."""
    (tmp_path / "vms").mkdir()
    merge_into_policy(tmp_path / "vms" / "pbx77.yaml", [], vm="pbx77")
    assert yaml.safe_load((tmp_path / "vms" / "pbx77.yaml").read_text()) == {"vm": "pbx77", "binaries": []}
    with pytest.raises(BadInput, match=r"no VM pbx7 in the inventory \(did you mean pbx77\?\)"):
        merge_into_policy(tmp_path / "vms" / "pbx7.yaml", [], vm="pbx77")


def test_progress_on_a_terminal_counts_files(corpus: dict[str, Built], tmp_path: Path) -> None:
    """On a terminal the bar counts files as they are done and ends on the full count."""
    import os
    import re
    import subprocess
    import sys

    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("kernels-x86-64", "kernels-haswell", "clones"):
        shutil.copy(corpus[name].path, tree / name)
    (tree / "script").write_text("#!/bin/sh\n")
    master, slave = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cpuguard", "scan", "--no-cache", "--format", "json", str(tree)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, timeout=120, check=False,
        )  # fmt: skip
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    assert done.returncode == 0
    shown = b"".join(chunks).decode()
    frames = [frame.rstrip() for frame in shown.replace("\r\n", "\n").split("\r") if frame.strip()]
    assert re.fullmatch(r"scanning \[#{20}\] 4/4 files, (\d+\.\d) of \1 MiB analysed", frames[-1]), shown
    assert all(re.match(r"scanning \[[#.]{20}\] \d/4 files, ", frame) for frame in frames), shown


def test_the_progress_bar_moves_with_every_file(corpus: dict[str, Built]) -> None:
    import io

    from cpuguard.scan.cli import _Bar
    from cpuguard.scan.scanner import Progress, scan_paths

    events: list[Progress] = []
    paths = [corpus[name].path for name in ("kernels-x86-64", "kernels-haswell", "clones")]
    scan_paths(paths, cache_dir=None, progress=events.append, jobs=1)
    ticks = iter(range(1000))
    out = io.StringIO()
    bar = _Bar(out, clock=lambda: float(next(ticks)))  # a second between events: each is drawn
    for event in events:
        bar(event)
    bar.close()
    counts = [frame.split("] ", 1)[1].split(" files")[0] for frame in out.getvalue().split("\r") if frame.strip()]
    assert counts[0] == "0/3" and counts[-1] == "3/3"  # the total is known from the first event
    assert [c for c in counts if c != counts[0]] == ["1/3", "2/3", "3/3"]
