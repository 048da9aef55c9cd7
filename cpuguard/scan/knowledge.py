"""The scanner's knowledge of run-time dispatch, loaded from ``data/scan_dispatch.yaml``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.yamlsafe import read_yaml

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "scan_dispatch.yaml"


@dataclass(frozen=True)
class DispatchKnowledge:
    cpu_state_variables: Mapping[str, str]
    cpu_query_functions: Mapping[str, str]
    variant_name: re.Pattern[str]
    clone_name: re.Pattern[str]
    libraries: tuple[tuple[str, str], ...]  # (file name glob, why)
    code_loaders: Mapping[str, str] = field(default_factory=dict)

    def loads_code(self, imports: Iterable[str]) -> bool:
        """Whether a program importing ``imports`` can load code that calls its exported functions."""
        return not self.code_loaders.keys().isdisjoint(imports)

    def library_pattern(self, name: str) -> str | None:
        """The ``dispatching_libraries`` pattern ``name`` matches, if any."""
        for pattern, _ in self.libraries:
            if fnmatch.fnmatchcase(name, pattern):
                return pattern
        return None

    def library_reason(self, file_name: str, soname: str | None = None) -> str | None:
        """Why the file is a known-dispatching library, judged by its ``DT_SONAME`` when it has one.

        A library is reached under several names (``libcrypto.so``,
        ``libcrypto.so.3``, a copy elsewhere) but has one soname, so the
        answer cannot depend on which name was scanned. Only files without
        a soname (programs such as ``zstd``) are judged by their file name.
        """
        name = soname or file_name
        for pattern, why in self.libraries:
            if fnmatch.fnmatchcase(name, pattern):
                return why
        return None

    def is_variant_name(self, name: str) -> bool:
        return bool(name) and self.variant_name.search(name.lower()) is not None

    def is_clone_name(self, name: str) -> bool:
        """GCC target_clones variants are named ``<function>.<target>[.<n>]``."""
        return self.clone_name.search(name.lower()) is not None


def _mapping(raw: Any, key: str, where: Path) -> dict[str, str]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise BadInput(where, f"{key}: expected a mapping")
    return {str(k): str(v) for k, v in value.items()}


def parse_dispatch_knowledge(raw: Any, where: Path) -> DispatchKnowledge:
    if not isinstance(raw, dict):
        raise BadInput(where, "expected a mapping at the top level")
    known = {
        "cpu_state_variables",
        "cpu_query_functions",
        "variant_tokens",
        "clone_prefixes",
        "dispatching_libraries",
        "code_loaders",
    }
    unknown = set(raw) - known
    if unknown:
        raise BadInput(where, f"unknown key {sorted(unknown)[0]!r}")
    tokens = [str(t).lower() for t in raw.get("variant_tokens") or []]
    prefixes = [str(t).lower() for t in raw.get("clone_prefixes") or []]
    if not tokens:
        raise BadInput(where, "variant_tokens: empty")
    alternatives = sorted((re.escape(t) for t in tokens), key=len, reverse=True)
    alternatives += [re.escape(p) + r"[a-z0-9_]+" for p in prefixes]
    either = "|".join(alternatives)
    pattern = re.compile(r"(?:^|[._-])(?:" + either + r")(?=$|[._-])")
    clone = re.compile(r"\.(?:" + either + r")(?:\.\d+)?$")
    libraries = []
    for item in raw.get("dispatching_libraries") or []:
        if not isinstance(item, dict) or set(item) != {"match", "why"}:
            raise BadInput(where, f"dispatching_libraries: bad entry {item!r}")
        libraries.append((str(item["match"]), str(item["why"])))
    return DispatchKnowledge(
        _mapping(raw, "cpu_state_variables", where),
        _mapping(raw, "cpu_query_functions", where),
        pattern,
        clone,
        tuple(libraries),
        _mapping(raw, "code_loaders", where),
    )


@cache
def load_dispatch_knowledge(path: Path = DATA_FILE) -> DispatchKnowledge:
    raw = read_yaml(path)
    return parse_dispatch_knowledge(raw, path)
