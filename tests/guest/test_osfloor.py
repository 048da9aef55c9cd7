"""Distribution CPU floors: the shipped table is valid and sourced, and real os-release files map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cpuguard.errors import BadInput
from cpuguard.guest.osfloor import FLOORS_FILE, default_floor_table, floor_for, load_floor_table, parse_floor_table
from cpuguard.guest.osrelease import OsInfo, os_info
from cpuguard.levels import LEVEL_NAMES, level_features
from cpuguard.yamlsafe import read_yaml

SAMPLES = Path(__file__).resolve().parent / "data" / "os-release"

# tests/guest/data/os-release file -> (level, family)
EXPECTED = {
    "almalinux-10.0": ("x86-64-v3", "RHEL 10"),
    "centos-stream-9": ("x86-64-v2", "RHEL 9"),
    "debian-12": ("x86-64-v1", "Debian"),
    "debian-13": ("x86-64-v1", "Debian"),
    "ol-9.4": ("x86-64-v2", "RHEL 9"),
    "opensuse-leap-16.0": ("x86-64-v2", "openSUSE Leap 16"),
    "rhel-10.0": ("x86-64-v3", "RHEL 10"),
    "rhel-9.6": ("x86-64-v2", "RHEL 9"),
    "rocky-9.3": ("x86-64-v2", "RHEL 9"),
    "sles-15.6": ("x86-64-v1", "SUSE Linux Enterprise 15"),
    "sles-16.0": ("x86-64-v2", "SUSE Linux Enterprise 16"),
    "ubuntu-24.04": ("x86-64-v1", "Ubuntu"),
}


def sample(name: str) -> OsInfo:
    return os_info((SAMPLES / name).read_text(encoding="utf-8"))


# --- the shipped table -----------------------------------------------------------------------


def test_shipped_table_loads_and_every_fact_has_a_source() -> None:
    table = load_floor_table()
    assert table == default_floor_table()
    floors = [rule.floor for rule in table] + [floor for rule in table for _, floor in rule.variants]
    for floor in floors:
        assert floor.level in LEVEL_NAMES
        assert level_features(floor.level)  # a level cpuguard can compare hosts against
        assert floor.family
        # a document named by its title in quotes, and where to find it
        assert '"' in floor.source, floor
        assert "https://" in floor.source or "debian-devel" in floor.source, floor


def test_every_entry_in_the_file_is_checked_by_the_loader() -> None:
    raw = read_yaml(FLOORS_FILE)
    assert len(raw["floors"]) == len(default_floor_table())
    for entry in raw["floors"]:
        assert entry["source"].strip()
        for variant in entry.get("variants", {}).values():
            assert variant["source"].strip()


def test_every_sample_has_an_expectation() -> None:
    assert sorted(p.name for p in SAMPLES.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_distribution_floors(name: str) -> None:
    floor = floor_for(sample(name))
    assert floor is not None
    assert (floor.level, floor.family) == EXPECTED[name]
    assert "ID_LIKE" not in floor.note  # each sample has its own entry


def test_the_rhel9_family_needs_v2_for_the_reason_users_see() -> None:
    floor = floor_for(sample("rocky-9.3"))
    assert floor is not None
    assert "Fatal glibc error: CPU does not support x86-64-v2" in floor.note
    assert "docs.rockylinux.org" in floor.source


# --- AlmaLinux 10's two builds -------------------------------------------------------------


@pytest.mark.parametrize(
    ("arches", "level", "hint"),
    [
        ((), "x86-64-v3", "separate x86_64_v2 build"),  # unknown build: the default one, said so
        ({"noarch"}, "x86-64-v3", "separate x86_64_v2 build"),
        ({"x86_64", "noarch"}, "x86-64-v3", "default x86-64-v3 build"),
        ({"x86_64_v2", "noarch"}, "x86-64-v2", "build for older hardware"),
        ({"x86_64_v2", "x86_64"}, "x86-64-v3", "default x86-64-v3 build"),  # mixed: the higher
    ],
)
def test_almalinux_10_builds(arches: set[str], level: str, hint: str) -> None:
    floor = floor_for(sample("almalinux-10.0"), arches=arches)
    assert floor is not None
    assert (floor.level, floor.family) == (level, "RHEL 10")
    assert hint in floor.note
    assert "wiki.almalinux.org" in floor.source


def test_variants_only_where_a_release_has_builds() -> None:
    rocky = floor_for(sample("rocky-9.3"), arches={"x86_64_v2"})
    assert rocky is not None and rocky.level == "x86-64-v2"
    rhel10 = floor_for(sample("rhel-10.0"), arches={"x86_64_v2"})
    assert rhel10 is not None and rhel10.level == "x86-64-v3"


# --- matching --------------------------------------------------------------------------------


def test_a_rebuild_matches_through_id_like() -> None:
    navy = OsInfo("navylinux", ("rhel", "centos", "fedora"), "9.3", "Navy Linux 9.3", "Navy Linux")
    floor = floor_for(navy)
    assert floor is not None
    assert (floor.level, floor.family) == ("x86-64-v2", "RHEL 9")
    assert floor.note.endswith("Navy Linux is taken for RHEL 9: its os-release says ID_LIKE=rhel")
    assert "Fatal glibc error" in floor.note


@pytest.mark.parametrize(
    "info",
    [
        OsInfo("fedora", (), "42", "Fedora Linux 42", "Fedora Linux"),  # no document of its own
        OsInfo("linuxmint", ("ubuntu", "debian"), "22", "Linux Mint 22", "Linux Mint"),  # versions differ
        OsInfo("fedora-derivative", ("fedora",), "9", "X", "X"),  # OL says ID_LIKE=fedora; fedora is no key
        OsInfo("debian", (), "", "Debian GNU/Linux trixie/sid", "Debian GNU/Linux"),  # testing: no VERSION_ID
        OsInfo("debian", (), "14", "Debian GNU/Linux 14", "Debian GNU/Linux"),  # baseline not settled
        OsInfo("rhel", ("fedora",), "8.10", "Red Hat Enterprise Linux 8.10", "Red Hat Enterprise Linux"),
        OsInfo("linux", (), "9", "Linux", "Linux"),
    ],
)
def test_unknown_floors_are_none(info: OsInfo) -> None:
    assert floor_for(info) is None


def test_own_entry_beats_id_like() -> None:
    floor = floor_for(sample("centos-stream-9"))  # ID_LIKE="rhel fedora" too
    assert floor is not None and "centos-stream-9" in floor.source


# --- the loader refuses what it cannot vouch for ---------------------------------------------

GOOD: dict[str, Any] = {"family": "X", "ids": ["x"], "versions": "1", "level": "v2", "source": '"Doc" (https://x)'}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{**GOOD, "source": ""}], "source must be a non-empty string"),
        ([{k: v for k, v in GOOD.items() if k != "source"}], "source must be a non-empty string"),
        ([{**GOOD, "level": "v5"}], "unknown x86-64 level 'v5'"),
        ([{**GOOD, "versions": "9-8"}], 'versions must be a major version "N" or a range "N-M"'),
        ([{**GOOD, "versions": True}], "versions must be"),
        ([{**GOOD, "ids": []}], "ids must name at least one"),
        ([{**GOOD, "ids": ["Not An ID"]}], "ids must be a list of os-release IDs"),
        ([{**GOOD, "colour": "red"}], "unknown key 'colour'"),
        ([{**GOOD, "variants": ["x86_64"]}], "variants must map package architectures"),
        ([{**GOOD, "variants": {"x86_64_v2": {"level": "v2"}}}], r"variants\.x86_64_v2: source must be"),
        ([GOOD, {**GOOD, "versions": "0-1"}], r"floors\[0\] and floors\[1\] both match x 1"),
        ([GOOD, {**GOOD, "ids": ["y"], "like": ["x"]}, {**GOOD, "ids": ["z"], "like": ["x"]}], "both match x 1"),
        (["not a mapping"], r"floors\[0\]: must be a mapping"),
    ],
)
def test_invalid_tables(entries: list[Any], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_floor_table({"floors": entries}, Path("os_floors.yaml"))


@pytest.mark.parametrize("document", [None, [], {"floors": {}}, {"floors": [], "extra": 1}])
def test_invalid_documents(document: Any) -> None:
    with pytest.raises(BadInput, match="one key, floors"):
        parse_floor_table(document, Path("os_floors.yaml"))


def test_a_table_can_be_passed_in() -> None:
    table = parse_floor_table({"floors": [{**GOOD, "ids": ["rocky"], "versions": "9"}]}, Path("t.yaml"))
    floor = floor_for(sample("rocky-9.3"), table)
    assert floor is not None and (floor.level, floor.family, floor.source) == ("x86-64-v2", "X", '"Doc" (https://x)')
    assert floor_for(sample("debian-12"), table) is None
