"""x86-64 psABI micro-architecture levels (x86-64-v1 .. v4) as feature sets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from cpuguard.errors import BadInput, UnknownName

LEVELS_FILE = Path(__file__).with_name("data") / "levels.yaml"
LEVEL_NAMES = ("x86-64-v1", "x86-64-v2", "x86-64-v3", "x86-64-v4")

#: Each level's full feature set, filled from LEVELS_FILE on first use or by preload_level_table.
_TABLE: dict[str, frozenset[str]] = {}


def _levels() -> Mapping[str, frozenset[str]]:
    if _TABLE:
        return _TABLE
    from cpuguard.yamlsafe import read_yaml  # deferred: the hook's fast path must not pay for PyYAML

    raw = read_yaml(LEVELS_FILE)
    cumulative: set[str] = set()
    result: dict[str, frozenset[str]] = {}
    for name in LEVEL_NAMES:
        cumulative |= set(raw[name])
        result[name] = frozenset(cumulative)
    _TABLE.update(result)
    return _TABLE


def level_table() -> dict[str, list[str]]:
    """Every level's full feature set, sorted: what a precompiled cache saves."""
    return {name: sorted(features) for name, features in _levels().items()}


def preload_level_table(table: Mapping[str, Iterable[str]]) -> None:
    """Use ``table`` (a saved :func:`level_table`) instead of reading levels.yaml.

    The libvirt hook restores it from its precompiled cache, which is keyed on
    levels.yaml, so the table is never stale.
    """
    if set(table) != set(LEVEL_NAMES):
        raise BadInput(None, f"level table must name exactly {', '.join(LEVEL_NAMES)}")
    _TABLE.clear()
    _TABLE.update({name: frozenset(table[name]) for name in LEVEL_NAMES})


def normalize_level(name: str, where: str | Path | None = None) -> str:
    """Accept ``x86-64-v3``, ``v3``, ``x86_64_v3``, ``3``."""
    text = name.strip().lower().replace("_", "-")
    short = text.removeprefix("x86-64-")
    if short.startswith("v"):
        short = short[1:]
    candidate = f"x86-64-v{short}"
    if candidate in LEVEL_NAMES:
        return candidate
    raise UnknownName(where, "x86-64 level", name, [n for n in LEVEL_NAMES])


def level_features(level: str) -> frozenset[str]:
    """The full feature set of ``level`` (which includes the lower levels)."""
    return _levels()[normalize_level(level)]


def level_own_features(level: str) -> frozenset[str]:
    """Only what ``level`` adds over the level below it."""
    name = normalize_level(level)
    index = LEVEL_NAMES.index(name)
    below = _levels()[LEVEL_NAMES[index - 1]] if index else frozenset()
    return _levels()[name] - below


def highest_level(flags: Iterable[str]) -> str | None:
    """The highest level whose every feature is in ``flags`` (None below v1)."""
    have = frozenset(flags)
    best = None
    for name in LEVEL_NAMES:
        if _levels()[name] <= have:
            best = name
        else:
            break
    return best


def lowest_level_covering(features: Iterable[str]) -> str | None:
    """The lowest level that includes every one of ``features`` (None if none does)."""
    need = frozenset(features)
    for name in LEVEL_NAMES:
        if need <= _levels()[name]:
            return name
    return None
