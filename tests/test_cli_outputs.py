"""What a user sees through the command line: incomplete results said first, long answers that fit
a screen, and the smaller consistencies of issue 14 (items 3, 5 and 8)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cpuguard


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
