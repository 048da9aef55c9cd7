"""Strict JSON parsing for the JSON files cpuguard reads (host snapshots, guest scan results).

json.loads alone keeps the last of duplicate keys silently, overflows the
stack on deep nesting and accepts lone UTF-16 surrogates that cannot be
printed later; every failure here is a one-line :class:`BadInput`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook refusing duplicate keys (json keeps the last one silently)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_json(data: bytes, where: Path | str) -> Any:
    try:
        raw = json.loads(data, object_pairs_hook=_object)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(where, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise BadInput(where, "not valid JSON: nested too deeply") from None
    try:  # "\udc00" is valid JSON but no text: printing it later would fail
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(where, "not valid JSON: a string holds a lone UTF-16 surrogate") from None
    return raw
