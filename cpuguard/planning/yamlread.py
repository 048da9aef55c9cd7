"""YAML for fleet-sized inputs: safe loading (libyaml's C parser when present),
and duplicate keys *recorded* with their line numbers instead of refused, so
that one duplicated VM name is reported as one problem while the rest of the
inventory is still planned.

A document in JSON syntax (valid YAML, and what ``cpuguard inventory collect``
writes) is read by the json module: PyYAML builds its objects in Python, about
45 microseconds per inventory entry, half a second for 10,000 VMs; json takes
a few milliseconds. Line numbers are then unknown (0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from cpuguard.xmlsafe import read_bytes
from cpuguard.yamlsafe import decode_text, parse_yaml

MAX_INVENTORY_BYTES = 64 * 1024 * 1024  # 10,000 VMs and 1,000 hosts take ~1 MiB

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Mapping(dict[Any, Any]):
    """A YAML mapping that remembers where each key was and which keys came twice."""

    lines: dict[Any, int]
    duplicates: list[tuple[Any, Any, int]]  # (key, the later value, its line)


class _Loader(_Base):  # type: ignore[misc]
    pass


def _mapping(loader: Any, node: yaml.MappingNode) -> Mapping:
    loader.flatten_mapping(node)
    result = Mapping()
    result.lines = {}
    result.duplicates = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "unhashable mapping key", key_node.start_mark) from None
        value = loader.construct_object(value_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result:
            result.duplicates.append((key, value, line))
        else:
            result[key] = value
            result.lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _json_mapping(pairs: list[tuple[str, Any]]) -> Mapping:
    result = Mapping()
    result.lines = {}
    result.duplicates = []
    for key, value in pairs:
        if key in result:
            result.duplicates.append((key, value, 0))
        else:
            result[key] = value
    return result


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not YAML")  # NaN / Infinity: let YAML parse (and judge) it


def _json(text: str) -> Any:
    """The document if it is JSON, else ``_NOT_JSON``."""
    if not text.lstrip().startswith("{"):
        return _NOT_JSON
    try:
        return json.loads(text, object_pairs_hook=_json_mapping, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return _NOT_JSON


_NOT_JSON = object()


def parse(data: bytes, where: str | Path) -> Any:
    text = decode_text(data, where)
    document = _json(text)
    if document is not _NOT_JSON:
        return document
    # the same guards as every other YAML cpuguard reads (aliases, nesting, odd values)
    return parse_yaml(text, where, loader_class=_Loader)


def read(path: Path, limit: int = MAX_INVENTORY_BYTES) -> Any:
    return parse(read_bytes(path, limit), path)


def duplicates(value: Any) -> list[tuple[Any, Any, int]]:
    return list(getattr(value, "duplicates", []))


def line_of(value: Any, key: Any) -> int | None:
    lines: dict[Any, int] = getattr(value, "lines", {})
    return lines.get(key)


def first_duplicate(value: Any) -> tuple[Any, int] | None:
    """(key, line) of the first duplicated key anywhere in ``value``, or None."""
    if isinstance(value, dict):
        found = getattr(value, "duplicates", [])
        if found:
            return found[0][0], found[0][2]
        for item in value.values():
            inner = first_duplicate(item)
            if inner is not None:
                return inner
    elif isinstance(value, list):
        for item in value:
            inner = first_duplicate(item)
            if inner is not None:
                return inner
    return None
