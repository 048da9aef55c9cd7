"""One file: ELF metadata -> decoded code -> a :class:`FileScan`.

Split in two halves around the decoding so that the scanner can decode
many files' code in a process pool: :func:`prepare` reads the ELF metadata
(cheap), :func:`finish` classifies the decoded summaries (pure).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from cpuguard.levels import LEVEL_NAMES, level_features, lowest_level_covering
from cpuguard.scan import elf
from cpuguard.scan.buildinfo import build_notes
from cpuguard.scan.classify import classify
from cpuguard.scan.decode import FunctionCode, Span
from cpuguard.scan.features import FeatureTable
from cpuguard.scan.knowledge import DispatchKnowledge
from cpuguard.scan.notes import Properties, read_properties
from cpuguard.scan.program import GAP, Program, read_program
from cpuguard.scan.records import FEATURE_NOTE, ISA_NOTE, FeatureUse, FileScan


@dataclass
class Prepared:
    path: str
    sha256: str
    size: int
    program: Program
    properties: Properties
    notes: list[str]
    spans: list[Span]
    immediates: bool
    library_reason: str | None
    go_level: str | None = None  # GOAMD64 of a Go program

    @property
    def code_bytes(self) -> int:
        return sum(s.size for s in self.spans)


_GOAMD64 = re.compile(rb"\bGOAMD64=(v[1-4])\b")
GO_REASON = (
    "a Go program: its runtime and standard library use {extras} only after checking"
    " internal/cpu.X86 (src/internal/cpu/cpu_x86.go); the compiler targets GOAMD64={level}"
)


def go_level(image: elf.ElfFile) -> str | None:
    """``x86-64-vN`` for a Go program (GOAMD64 from its build information, default v1), else None.

    Go 1.18+ keeps the build settings as text in ``.go.buildinfo``
    (``build\tGOAMD64=v3``); without the setting the compiler targets v1
    (https://go.dev/wiki/MinimumRequirements#amd64).
    """
    section = image.section(".go.buildinfo")
    if section is None:
        return None
    try:
        data = image.section_data(section) if section.size <= 1 << 20 else b""
    except elf.ElfError:
        data = b""
    found = _GOAMD64.search(data)
    return "x86-64-" + (found.group(1).decode() if found else "v1")


def prepare(path: str, source: elf.Source, sha256: str, knowledge: DispatchKnowledge, name: str) -> Prepared:
    """Read what ``path`` says about itself; raises :class:`elf.ElfError` subclasses."""
    image = elf.ElfFile(source)
    program = read_program(image)
    properties = read_properties(image)
    notes = build_notes(image, program.symbols)
    spans = [Span(f.start, f.offset, f.size) for f in program.functions]
    go = go_level(image)
    reason = knowledge.library_reason(name, image.soname)
    if reason is None and go is not None:
        reason = GO_REASON.format(extras="AVX2, AES-NI, SHA and other extensions", level=go[len("x86-64-") :])
    return Prepared(
        path,
        sha256,
        source.size,
        program,
        properties,
        notes,
        spans,
        image.type == elf.ET_EXEC,
        reason,
        go,
    )


@cache
def _baseline() -> frozenset[str]:
    """What every x86-64 CPU has: never dispatched, never worth a warning."""
    from cpuguard.knowledge import load_knowledge

    return load_knowledge().x86_64_baseline | level_features("x86-64-v1")


@cache
def _all_level_features() -> frozenset[str]:
    return level_features(LEVEL_NAMES[-1])


def finish(
    prepared: Prepared,
    codes: list[FunctionCode],
    table: FeatureTable,
    knowledge: DispatchKnowledge,
    field_checks: frozenset[int] = frozenset(),
) -> FileScan:
    """Classify the decoded ``codes``; ``field_checks`` are the functions that test a CPU field (fields.py)."""
    program = prepared.program
    props = prepared.properties
    baseline = _baseline()
    isa_level = props.needed_level
    compiled_for = level_features(isa_level) if isa_level else frozenset()
    built_for = compiled_for | (level_features(prepared.go_level) if prepared.go_level else frozenset())
    if prepared.library_reason:
        # What every x86-64 CPU model has outside the psABI levels (TSC...) is
        # never "dispatched"; level features (SSE3 is v2) keep their verdict.
        built_for |= baseline - _all_level_features()
    result = classify(
        program, codes, table, knowledge, baseline, prepared.library_reason, built_for,
        level_features("x86-64-v1"), field_checks,
    )  # fmt: skip
    required = list(result.required)
    have = {u.feature for u in required}
    for feature in sorted(compiled_for - have):
        required.append(FeatureUse(feature, 0, 0, (), ISA_NOTE))
        have.add(feature)
    for feature, label in props.needed_features():
        if feature not in have:
            required.append(FeatureUse(feature, 0, 0, (f"FEATURE_2_NEEDED {label}",), FEATURE_NOTE))
            have.add(feature)
    required.sort(key=lambda u: u.feature)

    notes = list(prepared.notes)
    if isa_level and isa_level != LEVEL_NAMES[0]:
        notes.append(f"declares GNU_PROPERTY_X86_ISA_1_NEEDED {isa_level} (enforced by the loader)")
    if props.used_level and props.used_level != isa_level:
        notes.append(f"assembler marked ISA level used: {props.used_level} (informative only)")
    if program.functions and all(f.origin == GAP for f in program.functions):
        notes.append("no symbols or unwind tables: analysed whole sections, dispatch not seen")
    notes.extend(program.problems)
    notes.extend(result.notes)

    level_needs = have & _all_level_features()
    # Every x86-64 program needs at least the x86-64 baseline.
    level = lowest_level_covering(level_needs) or LEVEL_NAMES[0] if level_needs else LEVEL_NAMES[0]
    if isa_level and (level is None or LEVEL_NAMES.index(isa_level) > LEVEL_NAMES.index(level)):
        level = isa_level
    return FileScan(
        path=prepared.path,
        sha256=prepared.sha256,
        size=prepared.size,
        arch="x86_64",
        kind=program.kind,
        code_bytes=prepared.code_bytes,
        functions=sum(1 for f in program.functions if f.origin != GAP),
        required=tuple(required),
        dispatched=tuple(d for d in result.dispatched if d.feature not in have),
        level=level,
        isa_needed=isa_level,
        notes=tuple(notes),
        needed_libraries=tuple(program.needed),
        runpath=tuple(program.runpath),
    )


def analyze_file(path: str, sha256: str, name: str) -> FileScan:
    """Scan one file start to finish (run in a worker process by the scanner)."""
    import os

    from cpuguard.scan.decode import decode_spans
    from cpuguard.scan.features import default_feature_table
    from cpuguard.scan.fields import field_checks
    from cpuguard.scan.knowledge import load_dispatch_knowledge

    knowledge = load_dispatch_knowledge()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return FileScan(path, sha256, skipped=exc.strerror or str(exc))
    try:
        size = os.fstat(fd).st_size
        source = elf.FileSource(fd, size)
        try:
            prepared = prepare(path, source, sha256, knowledge, name)
            # A known-dispatching library needs no call graph, hence no references.
            wanted = prepared.library_reason is None
            codes = decode_spans(source.read, prepared.spans, prepared.immediates, wanted)
            table = default_feature_table()
            checks = field_checks(source.read, prepared.spans, codes, table.probes()) if wanted else frozenset()
        except elf.ElfError as exc:
            return FileScan(path, sha256, size, skipped=str(exc))
        except OSError as exc:
            return FileScan(path, sha256, size, skipped=exc.strerror or str(exc))
        return finish(prepared, codes, table, knowledge, checks)
    finally:
        os.close(fd)
