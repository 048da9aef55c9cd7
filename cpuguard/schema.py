"""A small validator for the JSON-Schema subset cpuguard's file formats use.

cpuguard validates policies, inventories and its config on every hook run,
so the validator is small and fast; the same schemas are shipped as JSON
Schema documents (``cpuguard schema NAME``) and checked against the
``jsonschema`` package in the tests. Supported keywords: type, properties,
required, additionalProperties (false), items, enum, pattern, minItems,
minimum, maximum.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_name(value: Any) -> str:
    for name, types in _TYPES.items():
        if isinstance(value, types) and not (name in ("integer", "number") and isinstance(value, bool)):
            return name
    return type(value).__name__


def _where(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "top level"


def validate(value: Any, schema: Mapping[str, Any], where: str | Path, path: tuple[str | int, ...] = ()) -> None:
    """Raise BadInput naming the file, the key path and the problem."""
    if isinstance(value, float) and not math.isfinite(value):
        # YAML has .nan and .inf, JSON Schema's numbers do not: NaN passes every "minimum" check
        # and an infinite deadline_seconds would let the hook wait forever.
        raise BadInput(where, f"{_where(path)}: expected a finite number, got {value}")
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        ok = any(
            isinstance(value, _TYPES[n]) and not (n in ("integer", "number") and isinstance(value, bool)) for n in names
        )
        if not ok:
            raise BadInput(where, f"{_where(path)}: expected {' or '.join(names)}, got {_type_name(value)}")
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(str(c) for c in schema["enum"])
        raise BadInput(where, f"{_where(path)}: {value!r} is not one of {choices}")
    if "pattern" in schema and isinstance(value, str) and not re.fullmatch(schema["pattern"], value):
        raise BadInput(where, f"{_where(path)}: {value!r} does not match {schema['pattern']}")
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        raise BadInput(where, f"{_where(path)}: {value!r} is below {schema['minimum']}")
    if "maximum" in schema and isinstance(value, int | float) and value > schema["maximum"]:
        raise BadInput(where, f"{_where(path)}: {value!r} is above {schema['maximum']}")
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                raise BadInput(where, f"{_where(path)}: missing required key {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                validate(item, properties[key], where, (*path, str(key)))
            elif extra is False:
                known = sorted(properties)
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(known)})"
                raise BadInput(where, f"{_where(path)}: unknown key {key!r}{hint}")
            elif isinstance(extra, dict):
                validate(item, extra, where, (*path, str(key)))
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise BadInput(where, f"{_where(path)}: needs at least {schema['minItems']} item(s)")
        if "items" in schema:
            for index, item in enumerate(value):
                validate(item, schema["items"], where, (*path, index))
