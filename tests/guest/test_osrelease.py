"""os-release parsing: the distributions' own files (tests/guest/data/os-release), then junk."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuguard.guest.errors import GuestDataError
from cpuguard.guest.osrelease import MAX_CHARS, OsInfo, os_info, parse_os_release

SAMPLES = Path(__file__).resolve().parent / "data" / "os-release"

# file -> (ID, ID_LIKE, VERSION_ID, major, PRETTY_NAME)
EXPECTED: dict[str, tuple[str, tuple[str, ...], str, int | None, str]] = {
    "almalinux-10.0": ("almalinux", ("rhel", "centos", "fedora"), "10.0", 10, "AlmaLinux 10.0 (Purple Lion)"),
    "centos-stream-9": ("centos", ("rhel", "fedora"), "9", 9, "CentOS Stream 9"),
    "debian-12": ("debian", (), "12", 12, "Debian GNU/Linux 12 (bookworm)"),
    "debian-13": ("debian", (), "13", 13, "Debian GNU/Linux 13 (trixie)"),
    "ol-9.4": ("ol", ("fedora",), "9.4", 9, "Oracle Linux Server 9.4"),
    "opensuse-leap-16.0": ("opensuse-leap", ("suse", "opensuse"), "16.0", 16, "openSUSE Leap 16.0"),
    "rhel-10.0": ("rhel", ("centos", "fedora"), "10.0", 10, "Red Hat Enterprise Linux 10.0 (Coughlan)"),
    "rhel-9.6": ("rhel", ("fedora",), "9.6", 9, "Red Hat Enterprise Linux 9.6 (Plow)"),
    "rocky-9.3": ("rocky", ("rhel", "centos", "fedora"), "9.3", 9, "Rocky Linux 9.3 (Blue Onyx)"),
    "sles-15.6": ("sles", ("suse",), "15.6", 15, "SUSE Linux Enterprise Server 15 SP6"),
    "sles-16.0": ("sles", ("suse",), "16.0", 16, "SUSE Linux Enterprise Server 16.0"),
    "ubuntu-24.04": ("ubuntu", ("debian",), "24.04", 24, "Ubuntu 24.04.3 LTS"),
}


def test_every_sample_is_expected() -> None:
    assert sorted(p.name for p in SAMPLES.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_distribution_files(name: str) -> None:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    info = os_info(text)
    assert (info.id, info.id_like, info.version_id, info.major, info.pretty_name) == EXPECTED[name]
    fields = parse_os_release(text)
    # every assignment line of the file is read: none of the distributions' lines is junk
    assignments = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(fields) == len(set(line.partition("=")[0] for line in assignments))


def test_unquoted_values_and_comments() -> None:
    fields = parse_os_release((SAMPLES / "almalinux-10.0").read_text())
    assert fields["SUPPORT_END"] == "2035-06-01"
    assert fields["ANSI_COLOR"] == "0;34"  # a ";" inside quotes is text
    assert "#" not in "".join(fields)


def test_this_machine() -> None:
    path = Path("/etc/os-release")
    if not path.exists():
        pytest.skip("no /etc/os-release here")
    info = os_info(path.read_text())
    assert info.id and info.name


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('NAME="Double \\"quoted\\" \\$x \\\\ \\n"', 'Double "quoted" $x \\ \\n'),
        ("NAME='single \\ $x \"'", 'single \\ $x "'),
        ("NAME=bare\\ word", "bare word"),
        ("NAME=bare # trailing comment", "bare"),
        ('NAME="quoted" # trailing comment', "quoted"),
        ("NAME=", ""),
        ('NAME=""', ""),
        ("  NAME=indented  ", "indented"),
        ("NAME=é-ü", "é-ü"),
    ],
)
def test_shell_quoting(line: str, expected: str) -> None:
    assert parse_os_release(line) == {"NAME": expected}


@pytest.mark.parametrize(
    "line",
    [
        "NAME",
        "=value",
        "NAME = spaced",
        "1NAME=digit",
        "NA-ME=dash",
        'NAME="unterminated',
        "NAME='unterminated",
        'NAME="two" "strings"',
        'NAME="a"b',
        "NAME=two words",
        "NAME=$(reboot)",
        "NAME=`reboot`",
        "NAME=a;reboot",
        'NAME="tab\there"',
        'NAME="escape \x1b[2J"',
        "NAME=\x00",
        "NAME=a'b'",
    ],
)
def test_junk_lines_are_ignored(line: str) -> None:
    assert parse_os_release(f"ID=debian\n{line}\nVERSION_ID=12\n") == {"ID": "debian", "VERSION_ID": "12"}


def test_later_assignment_wins_and_line_ends() -> None:
    assert parse_os_release("ID=a\r\nID=b\r\n") == {"ID": "b"}
    # only "\n" ends a line, as in a shell: a form feed does not split one
    assert parse_os_release("ID=a\x0cVERSION_ID=1") == {}


def test_defaults_and_normalisation() -> None:
    assert OsInfo.from_release({}) == OsInfo("linux", (), "", "Linux", "Linux")
    info = OsInfo.from_release({"ID": "Ubuntu", "ID_LIKE": "Debian  bad/id  ok_1", "NAME": "X"})
    assert (info.id, info.id_like, info.pretty_name) == ("ubuntu", ("debian", "ok_1"), "X")
    assert OsInfo.from_release({"ID": "two words"}).id == "linux"
    assert OsInfo.from_release({"ID": "rhel", "VERSION_ID": "rolling"}).major is None
    assert OsInfo.from_release({"VERSION_ID": "9"}).major == 9
    assert OsInfo.from_release({"VERSION_ID": "9" * 40}).major is None


def test_size_bound() -> None:
    with pytest.raises(GuestDataError, match="larger than 64 KiB"):
        parse_os_release("#" * (MAX_CHARS + 1))
    assert parse_os_release("#" * MAX_CHARS) == {}
