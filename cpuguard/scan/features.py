"""What each x86 instruction code needs from the CPU, in canonical feature names.

iced-x86 reports CPUID feature names per instruction; the vocabulary maps
them to canonical names; ``data/scan_instructions.yaml`` holds the
corrections that matter when reading binaries (LAHF/SAHF need ``lahf_lm``
in 64-bit mode, ENDBR64 and TZCNT run harmlessly on older CPUs, XGETBV is
only executed after a CPUID check...). Results are computed once per
instruction code and cached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, cast

from iced_x86 import Code, CpuidFeature, Instruction, Mnemonic, OpCodeInfo

from cpuguard.errors import BadInput
from cpuguard.yamlsafe import read_yaml

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "scan_instructions.yaml"


class Use(Enum):
    """How an instruction's features count."""

    NEEDED = "needed"  # the instruction faults (or misbehaves) without them
    HARMLESS = "harmless"  # runs as a NOP or an equivalent older instruction
    CHECKED = "checked"  # only ever executed after a CPUID/OS check


def family(mnemonic: str) -> str | None:
    """An ISA-neutral name for comparing two builds of the same code, None to ignore.

    A body compiled for AVX or BMI2 differs from its baseline twin mostly in
    encodings: VPADDD for PADDD, SHLX for SHL, RORX for ROR, and in register
    moves. Folding those together makes the two instruction mixes comparable.
    """
    name = mnemonic.upper()
    if name.startswith(("MOV", "NOP", "ENDBR")) or name in ("XCHG", "PUSH", "POP", "INT3"):
        return None
    if name in ("SHLX", "SHRX", "SARX", "RORX"):
        name = name[:-1]
    if name in ("ROL", "ROR", "RCL", "RCR"):
        return "ROTATE"
    if name.startswith("V") and len(name) > 3 and name not in ("VERR", "VERW"):
        name = name[1:]
    return name


@dataclass(frozen=True)
class CodeInfo:
    """What one instruction code needs."""

    mnemonic: str
    features: tuple[str, ...]  # canonical names (empty: baseline)
    use: Use
    why: str = ""  # for HARMLESS / CHECKED
    unnamed: tuple[str, ...] = ()  # iced names the vocabulary does not know


@dataclass(frozen=True)
class InstructionKnowledge:
    not_flags: frozenset[str]
    extra_names: Mapping[str, str]
    adds: Mapping[str, tuple[str, ...]]
    harmless: Mapping[str, str]
    checked: Mapping[str, str]


def _names(enum: object) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}


@cache
def _iced_names() -> tuple[dict[int, str], dict[int, str], dict[int, str]]:
    return _names(CpuidFeature), _names(Mnemonic), _names(Code)


def parse_knowledge(raw: Any, where: Path) -> InstructionKnowledge:
    """Validate the instruction data file (pure; ``where`` names it in errors)."""
    if not isinstance(raw, dict):
        raise BadInput(where, "expected a mapping at the top level")
    known = {"not_flags", "extra_names", "adds", "harmless", "checked_before_use"}
    unknown = set(raw) - known
    if unknown:
        raise BadInput(where, f"unknown key {sorted(unknown)[0]!r}")
    cpuid_names = set(_iced_names()[0].values())
    mnemonics = set(_iced_names()[1].values())

    def need_names(values: Any, valid: set[str], key: str) -> None:
        for value in values:
            if value not in valid:
                raise BadInput(where, f"{key}: {value!r} is not an iced-x86 name")

    not_flags = raw.get("not_flags", [])
    need_names(not_flags, cpuid_names, "not_flags")
    extra = {str(k): str(v) for k, v in (raw.get("extra_names") or {}).items()}
    need_names(extra, cpuid_names, "extra_names")
    adds = {str(k): tuple(str(f) for f in v) for k, v in (raw.get("adds") or {}).items()}
    harmless = {str(k): str(v) for k, v in (raw.get("harmless") or {}).items()}
    checked = {str(k): str(v) for k, v in (raw.get("checked_before_use") or {}).items()}
    for key, table in (("adds", adds), ("harmless", harmless), ("checked_before_use", checked)):
        need_names(table, mnemonics, key)
    return InstructionKnowledge(frozenset(not_flags), extra, adds, harmless, checked)


@cache
def load_instruction_knowledge(path: Path = DATA_FILE) -> InstructionKnowledge:
    raw = read_yaml(path)
    return parse_knowledge(raw, path)


PROBES = frozenset({"CPUID", "XGETBV"})


class FeatureTable:
    """Instruction code -> :class:`CodeInfo`, computed lazily and cached."""

    def __init__(self, knowledge: InstructionKnowledge, canonical: Callable[[str], str | None]) -> None:
        self._knowledge = knowledge
        self._canonical = canonical
        self._cache: dict[int, CodeInfo] = {}
        self._probe = Instruction()

    def __getitem__(self, code: int) -> CodeInfo:
        info = self._cache.get(code)
        if info is None:
            info = self._cache[code] = self._compute(code)
        return info

    @cache  # noqa: B019 - one table per process, kept for its lifetime
    def notable(self, ignore: frozenset[str]) -> frozenset[int]:
        """Codes that matter beyond ``ignore``: they need other features, are
        checked before use, need an unnamed extension, or probe the CPU."""
        from cpuguard.scan.decode import code_count

        result = set()
        for code in range(code_count()):
            info = self[code]
            if (
                info.mnemonic in PROBES
                or info.unnamed
                or info.use is Use.CHECKED
                or (info.use is Use.NEEDED and not set(info.features) <= ignore)
            ):
                result.add(code)
        return frozenset(result)

    @cache  # noqa: B019
    def probes(self) -> frozenset[int]:
        """Codes of CPUID and XGETBV: a function running them examines the CPU."""
        from cpuguard.scan.decode import code_count

        return frozenset(c for c in range(code_count()) if self[c].mnemonic in PROBES)

    def _compute(self, code: int) -> CodeInfo:
        feature_names, mnemonic_names, _ = _iced_names()
        k = self._knowledge
        mnemonic = mnemonic_names.get(OpCodeInfo(cast(Any, code)).mnemonic, "?")
        self._probe.code = cast(Any, code)
        features: list[str] = []
        unnamed: list[str] = []
        for feature in self._probe.cpuid_features():
            name = feature_names.get(feature, str(feature))
            if name in k.not_flags:
                continue
            canonical = self._canonical(k.extra_names.get(name, name))
            if canonical is None:
                unnamed.append(name)
            elif canonical not in features:
                features.append(canonical)
        for extra in k.adds.get(mnemonic, ()):
            canonical = self._canonical(extra) or extra
            if canonical not in features:
                features.append(canonical)
        if mnemonic in k.harmless:
            return CodeInfo(mnemonic, tuple(features), Use.HARMLESS, k.harmless[mnemonic])
        if mnemonic in k.checked:
            return CodeInfo(mnemonic, tuple(features), Use.CHECKED, k.checked[mnemonic])
        return CodeInfo(mnemonic, tuple(features), Use.NEEDED, unnamed=tuple(unnamed))


@cache
def default_feature_table() -> FeatureTable:
    from cpuguard.vocabulary import load_vocabulary

    vocabulary = load_vocabulary()
    return FeatureTable(load_instruction_knowledge(), vocabulary.try_canonical)


def code_name(code: int) -> str:
    return _iced_names()[2].get(code, str(code))
