"""The CPU floor a guest's distribution imposes: an x86-64 psABI level, from data.

The knowledge lives in ``cpuguard/data/os_floors.yaml``, every entry with the
document that states it (release notes, installation guides); see that file
for how entries match. This module loads and checks it and answers one
question: for this os-release (and, where a release comes in several builds,
these package architectures), which level, of which family, said where.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.guest.osrelease import OsInfo
from cpuguard.levels import LEVEL_NAMES, normalize_level

FLOORS_FILE = Path(__file__).resolve().parents[1] / "data" / "os_floors.yaml"

_ID = re.compile(r"[0-9a-z._-]+")
_VERSIONS = re.compile(r"(\d{1,4})(?:-(\d{1,4}))?")
_RULE_KEYS = frozenset({"family", "ids", "like", "versions", "level", "source", "note", "variants"})
_VARIANT_KEYS = frozenset({"level", "source", "note"})


@dataclass(frozen=True)
class OsFloor:
    """The level a distribution needs, the family it belongs to, the document saying so,
    and anything a reader should know (a variant build, a match through ID_LIKE)."""

    level: str
    family: str
    source: str
    note: str = ""


@dataclass(frozen=True)
class FloorRule:
    """One entry of the floor table."""

    ids: frozenset[str]
    like: frozenset[str]
    first: int
    last: int
    floor: OsFloor
    #: package architecture -> the floor of the build it marks
    variants: tuple[tuple[str, OsFloor], ...] = ()

    def covers(self, major: int) -> bool:
        return self.first <= major <= self.last

    def floor_for(self, arches: Collection[str]) -> OsFloor:
        """The floor of the build ``arches`` point at: the highest of the variants they
        name (a guest mixing builds needs the higher one), else the entry's own."""
        chosen = [floor for arch, floor in self.variants if arch in arches]
        if not chosen:
            return self.floor
        return max(chosen, key=lambda floor: LEVEL_NAMES.index(floor.level))


FloorTable = tuple[FloorRule, ...]


def _text(where: Path, entry: str, raw: Any, key: str, *, required: bool = True) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadInput(where, f"{entry}: {key} must be {'a non-empty ' if required else 'a '}string")
    return " ".join(value.split())


def _floor(where: Path, entry: str, raw: Any, family: str, keys: frozenset[str]) -> OsFloor:
    if not isinstance(raw, Mapping):
        raise BadInput(where, f"{entry}: must be a mapping")
    unknown = sorted(set(raw) - keys, key=str)
    if unknown:
        raise BadInput(where, f"{entry}: unknown key {unknown[0]!r}")
    return OsFloor(
        level=normalize_level(_text(where, entry, raw, "level"), where),
        family=family,
        source=_text(where, entry, raw, "source"),
        note=_text(where, entry, raw, "note", required=False),
    )


def _ids(where: Path, entry: str, raw: Any, key: str) -> frozenset[str]:
    values = raw.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and _ID.fullmatch(v) for v in values):
        raise BadInput(where, f"{entry}: {key} must be a list of os-release IDs")
    return frozenset(values)


def _rule(where: Path, index: int, raw: Any) -> FloorRule:
    entry = f"floors[{index}]"
    if not isinstance(raw, Mapping):
        raise BadInput(where, f"{entry}: must be a mapping")
    family = _text(where, entry, raw, "family")
    floor = _floor(where, entry, raw, family, _RULE_KEYS)
    ids = _ids(where, entry, raw, "ids")
    if not ids:
        raise BadInput(where, f"{entry}: ids must name at least one os-release ID")
    versions = raw.get("versions")
    match = _VERSIONS.fullmatch(str(versions)) if isinstance(versions, str | int) else None
    if match is None or int(match.group(2) or match.group(1)) < int(match.group(1)):
        raise BadInput(where, f'{entry}: versions must be a major version "N" or a range "N-M"')
    variants = raw.get("variants", {})
    if not isinstance(variants, Mapping) or not all(isinstance(arch, str) and arch for arch in variants):
        raise BadInput(where, f"{entry}: variants must map package architectures to floors")
    return FloorRule(
        ids=ids,
        like=_ids(where, entry, raw, "like"),
        first=int(match.group(1)),
        last=int(match.group(2) or match.group(1)),
        floor=floor,
        variants=tuple(
            (arch, _floor(where, f"{entry}.variants.{arch}", value, family, _VARIANT_KEYS))
            for arch, value in sorted(variants.items())
        ),
    )


def _check_overlaps(where: Path, table: FloorTable) -> None:
    """Refuse two entries that could answer for the same guest: the table must not
    depend on its order."""
    for index, rule in enumerate(table):
        for earlier, other in enumerate(table[:index]):
            shared = (rule.ids & other.ids) | (rule.like & other.like)
            if shared and rule.first <= other.last and other.first <= rule.last:
                version = max(rule.first, other.first)
                raise BadInput(where, f"floors[{earlier}] and floors[{index}] both match {sorted(shared)[0]} {version}")


def parse_floor_table(raw: Any, where: Path) -> FloorTable:
    """Check a loaded floor document and turn it into rules; one line on any defect."""
    if not isinstance(raw, Mapping) or set(raw) != {"floors"} or not isinstance(raw["floors"], list):
        raise BadInput(where, "must be a mapping with one key, floors: a list of entries")
    table = tuple(_rule(where, index, entry) for index, entry in enumerate(raw["floors"]))
    _check_overlaps(where, table)
    return table


def load_floor_table(path: Path = FLOORS_FILE) -> FloorTable:
    from cpuguard.yamlsafe import read_yaml  # deferred like every shipped data file's PyYAML

    return parse_floor_table(read_yaml(path), path)


@functools.cache
def default_floor_table() -> FloorTable:
    """The shipped table, read once."""
    return load_floor_table()


def floor_for(info: OsInfo, table: FloorTable | None = None, *, arches: Collection[str] = ()) -> OsFloor | None:
    """The CPU floor of the distribution ``info`` describes, or None when no entry knows it.

    An entry for the guest's own ID wins; otherwise an entry whose ``like`` names one of
    the guest's ID_LIKE values (in the guest's order), and the result's note says so.
    Both need the major version of VERSION_ID in the entry's range. ``arches`` are the
    architectures of the guest's installed packages, which pick a variant build.
    """
    rules = default_floor_table() if table is None else table
    major = info.major
    if major is None:
        return None
    for rule in rules:
        if info.id in rule.ids and rule.covers(major):
            return rule.floor_for(arches)
    for like in info.id_like:
        for rule in rules:
            if like in rule.like and rule.covers(major):
                floor = rule.floor_for(arches)
                taken = f"{info.name} is taken for {floor.family}: its os-release says ID_LIKE={like}"
                return replace(floor, note=f"{floor.note}; {taken}" if floor.note else taken)
    return None
