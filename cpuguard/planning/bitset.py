"""Feature sets as Python integers: one bit per feature, so that "does this
host offer everything this VM needs" is ``need & ~have == 0`` -- one machine
operation per 64 features instead of a hash lookup per feature."""

from __future__ import annotations

from collections.abc import Iterable


class FeatureIndex:
    """Assigns each feature name a bit, in order of first sight."""

    def __init__(self) -> None:
        self._bits: dict[str, int] = {}
        self._names: list[str] = []

    def mask(self, features: Iterable[str]) -> int:
        bits = self._bits
        value = 0
        for feature in features:
            bit = bits.get(feature)
            if bit is None:
                bit = bits[feature] = len(self._names)
                self._names.append(feature)
            value |= 1 << bit
        return value

    def names(self, mask: int) -> tuple[str, ...]:
        """The features of ``mask``, sorted by name."""
        found = []
        names = self._names
        while mask:
            low = mask & -mask
            found.append(names[low.bit_length() - 1])
            mask ^= low
        return tuple(sorted(found))


def indexes(mask: int) -> list[int]:
    """The positions of the set bits of ``mask``, ascending."""
    found = []
    while mask:
        low = mask & -mask
        found.append(low.bit_length() - 1)
        mask ^= low
    return found
