"""Safe YAML loading: safe_load semantics, duplicate keys refused, size capped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cpuguard.errors import BadInput
from cpuguard.xmlsafe import read_bytes

MAX_YAML_BYTES = 4 * 1024 * 1024


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (YAML 1.2 forbids them;
    PyYAML silently keeps the last one, which hides typos in policies)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "unhashable mapping key", key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_yaml(text: str | bytes, where: str | Path) -> Any:
    if isinstance(text, bytes):
        if b"\x00" in text:
            raise BadInput(where, "contains NUL bytes: not a YAML text file")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(where, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise BadInput(where, f"invalid YAML: {exc.problem or exc.context}{position}") from None
    except yaml.YAMLError as exc:
        raise BadInput(where, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise BadInput(where, "invalid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:
        # PyYAML's constructors call int() and datetime() unguarded: an integer of 5,000 digits
        # or a date like 2024-13-45 raises these instead of a YAMLError.
        raise BadInput(where, f"invalid YAML value: {exc}") from None


def read_yaml(path: Path) -> Any:
    return parse_yaml(read_bytes(path, MAX_YAML_BYTES), path)
