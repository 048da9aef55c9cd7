"""Hand-made multiversioning: one body compiled twice, a flag choosing.

Code such as zstd's ``DYNAMIC_BMI2`` compiles one body twice, once with
``__attribute__((target("bmi2")))``, and picks a version from a flag set by
CPUID at start-up: ``if (bmi2) f_bmi2(...); else f_default(...)``. The flag
is data, out of reach of the call-graph analysis, but the shape is not: one
caller refers to two functions of nearly the same size and instruction mix,
one using CPU extensions the other does without.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cpuguard.scan.features import FeatureTable, family

SIMILARITY = 0.7  # weighted Jaccard of the ISA-neutral instruction mixes
SIZE_RATIO = 1.3
MIN_INSTRUCTIONS = 12


def similarity(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    keys = a.keys() | b.keys()
    low = sum(min(a.get(k, 0), b.get(k, 0)) for k in keys)
    high = sum(max(a.get(k, 0), b.get(k, 0)) for k in keys)
    return low / high if high else 0.0


def shape(mix: Mapping[int, int], table: FeatureTable) -> dict[str, int]:
    """Instruction code counts folded into ISA-neutral families (see :func:`features.family`)."""
    result: dict[str, int] = {}
    for code, n in mix.items():
        name = family(table[code].mnemonic)
        if name is not None:
            result[name] = result.get(name, 0) + n
    return result


def find_twins(
    edges: Sequence[Sequence[int]],
    needed: Sequence[Mapping[str, int]],
    mixes: Sequence[Mapping[int, int]],
    baseline: frozenset[str],
    table: FeatureTable,
) -> dict[tuple[int, int], int]:
    """``(caller, richer) -> plainer`` for every caller that refers to twin builds.

    ``edges[i]`` are the functions function ``i`` refers to, ``needed[i]`` the
    features its instructions need and ``mixes[i]`` its instruction code counts.
    """
    empty: frozenset[str] = frozenset()
    extra = [frozenset(f for f in n if f not in baseline) if n else empty for n in needed]
    rich = {i for i, features in enumerate(extra) if features}
    sizes: dict[int, int] = {}
    shapes: dict[int, dict[str, int]] = {}

    def size(i: int) -> int:
        if i not in sizes:
            sizes[i] = sum(mixes[i].values())
        return sizes[i]

    def shape_of(i: int) -> dict[str, int]:
        if i not in shapes:
            shapes[i] = shape(mixes[i], table)
        return shapes[i]

    found: dict[tuple[int, int], int] = {}
    for caller, targets in enumerate(edges):
        if rich.isdisjoint(targets):
            continue
        unique = set(targets)
        for b in unique & rich:
            if size(b) < MIN_INSTRUCTIONS:
                continue
            for a in unique:
                if a == b or not extra[a] < extra[b] or size(a) < MIN_INSTRUCTIONS:
                    continue
                if max(size(a), size(b)) > SIZE_RATIO * min(size(a), size(b)):
                    continue
                if similarity(shape_of(a), shape_of(b)) >= SIMILARITY:
                    found[(caller, b)] = a
                    break
    return found
