"""Safe YAML loading: safe_load semantics, duplicate keys refused, size capped."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cpuguard.errors import BadInput
from cpuguard.xmlsafe import read_bytes

MAX_YAML_BYTES = 4 * 1024 * 1024

#: Most values (scalars, lists, mappings) a document may hold once its aliases are expanded.
#: Aliases share nodes, so a 1 KiB file of nested ``*anchor`` lists can stand for billions of
#: values that validation and error messages would walk (YAML's "billion laughs"). Real
#: policies hold a few thousand values.
MAX_YAML_VALUES = 1_000_000

#: Deepest nesting of flow collections (``[...]``, ``{...}``) accepted. PyYAML's scanner keeps
#: one pending "simple key" per open flow level and walks them all for every token, so nesting
#: costs time quadratically: 120 KiB of 150-deep brackets took 5 s. Real files nest 2 or 3 deep.
MAX_YAML_FLOW_DEPTH = 20
_BRACKETS = re.compile(r"[\[\]{}]")


def _flow_too_deep(text: str) -> bool:
    """Whether brackets nest deeper than the cap. Brackets inside quoted strings count too:
    over-counting can only refuse a file with 20 unmatched brackets in its strings."""
    depth = 0
    for match in _BRACKETS.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_YAML_FLOW_DEPTH:
                return True
        elif depth:
            depth -= 1
    return False


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


def _expanded_size(root: yaml.Node, where: str | Path) -> int:
    """Count the values of ``root`` with every alias expanded, refusing cycles and bombs.

    Iterative (deep documents must not exhaust Python's stack) and memoised by node, so
    shared subtrees are counted without being walked again.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.ScalarNode):
            try:  # a "\udc00" escape makes a string no output can print
                node.value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInput(where, "invalid YAML: a string holds a lone UTF-16 surrogate") from None
            sizes[key] = 1
            continue
        children: list[yaml.Node] = (
            [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else node.value
        )
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_YAML_VALUES:
                raise BadInput(where, f"YAML aliases expand to more than {MAX_YAML_VALUES:,} values, refusing it")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise BadInput(where, "invalid YAML: an alias refers to a node that contains it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def decode_text(data: bytes, where: str | Path) -> str:
    """A YAML file's bytes as text: UTF-8 without NUL bytes, else one line saying why."""
    if b"\x00" in data:
        raise BadInput(where, "contains NUL bytes: not a YAML text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(where, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_yaml(text: str | bytes, where: str | Path, *, loader_class: type[Any] = _StrictLoader) -> Any:
    """Parse one YAML document with every guard of this module. ``loader_class`` must derive
    from a safe loader (the planning reader records duplicate keys instead of refusing them)."""
    if isinstance(text, bytes):
        text = decode_text(text, where)
    if _flow_too_deep(text):
        raise BadInput(where, f"invalid YAML: [...] or {{...}} nested more than {MAX_YAML_FLOW_DEPTH} deep")
    loader: Any = None
    try:
        loader = loader_class(text)  # refuses unprintable characters already
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where)
        return loader.construct_document(node)
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
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: Path) -> Any:
    return parse_yaml(read_bytes(path, MAX_YAML_BYTES), path)
