"""The planning reader (duplicate keys recorded, not refused) keeps every guard of yamlsafe."""

from __future__ import annotations

import pytest

from cpuguard.errors import BadInput
from cpuguard.planning.yamlread import duplicates, parse


def test_alias_bomb_is_refused() -> None:
    lines = [b"a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 11):
        name, previous = chr(97 + i).encode(), chr(96 + i).encode()
        lines.append(name + b": &" + name + b" [" + b", ".join([b"*" + previous] * 9) + b"]")
    with pytest.raises(BadInput, match="aliases expand to more than"):
        parse(b"\n".join(lines) + b"\n", "inventory.yaml")


def test_deep_flow_nesting_is_refused() -> None:
    with pytest.raises(BadInput, match="nested more than"):
        parse(b"vms: " + b"[" * 50 + b"]" * 50 + b"\n", "inventory.yaml")


def test_duplicates_are_still_recorded() -> None:
    doc = parse(b"vms:\n  a: {host: x}\n  a: {host: y}\n", "inventory.yaml")
    assert [(key, line) for key, _value, line in duplicates(doc["vms"])] == [("a", 3)]
