"""Decode machine code with iced-x86 and summarize each function.

The hot loop avoids per-instruction Python code: iced's decoder produces
instruction objects, and ``map``/``compress`` over C-level getters pull out
only what the analysis needs: the instruction code of every instruction
(counted per function), the targets of near branches (and the next address when the code runs
off its end into the following function), the addresses that
RIP-relative memory operands point at, and (for non-PIE executables, where
function pointers are immediates) 32-bit immediates. Everything else,
including the CPUID features of an instruction code, is looked up later
once per distinct code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import compress
from operator import attrgetter
from typing import Any, cast

from iced_x86 import Code, Decoder, FlowControl, Mnemonic, OpCodeInfo, OpCodeOperandKind

_CODE = attrgetter("code")
_TARGET = attrgetter("near_branch_target")
_IS_RIP = attrgetter("is_ip_rel_memory_operand")
_RIP_ADDR = attrgetter("ip_rel_memory_address")
_IMM32 = attrgetter("immediate32")

_BRANCH_KINDS = frozenset(
    {OpCodeOperandKind.BR64_1, OpCodeOperandKind.BR64_4, OpCodeOperandKind.BR32_1,
     OpCodeOperandKind.BR32_4}
)  # fmt: skip
# RIP-relative operands of these instructions reveal what a function reads
# (CPU feature variables, GOT slots) and which functions it takes the address of.
_REF_MNEMONICS = frozenset(
    {Mnemonic.LEA, Mnemonic.MOV, Mnemonic.MOVZX, Mnemonic.MOVSX, Mnemonic.MOVSXD,
     Mnemonic.TEST, Mnemonic.CMP, Mnemonic.AND, Mnemonic.OR, Mnemonic.BT,
     Mnemonic.CALL, Mnemonic.JMP}
)  # fmt: skip
_IMM_CODES = frozenset({Code.MOV_R32_IMM32, Code.MOV_RM64_IMM32, Code.PUSHQ_IMM32})
# A function whose last instruction is one of these runs on into the next one:
# glibc's hand-written variants are laid out that way (__strcasecmp_avx2 sets
# up the locale and falls into __strcasecmp_l_avx2, which has its own FDE).
# A final CALL is left out: it is nearly always a call to a noreturn function.
_FALLS_THROUGH = frozenset({FlowControl.NEXT, FlowControl.CONDITIONAL_BRANCH})

# Bytes of NOP, multi-byte NOP (0F 1F /0 with prefixes), INT3 and zero padding.
# Whatever instructions a run of only these bytes decodes to (NOPs, Jcc, CMOVcc,
# SETcc, UCOMISS...) needs nothing beyond x86-64-v1, so such runs are skipped.
PADDING_BYTES = bytes([0x90, 0xCC, 0x00, 0x0F, 0x1F, 0x66, 0x2E, 0x84, 0x40, 0x44, 0x80])
PADDING_MAX = 64
CHUNK = 4 << 20


@dataclass(frozen=True)
class CodeTables:
    """Per-instruction-code flags as bytes, indexable at C speed."""

    branch: bytes
    memref: bytes
    immediate: bytes


def code_count() -> int:
    return max(v for k, v in vars(Code).items() if not k.startswith("_") and isinstance(v, int)) + 1


@cache
def code_tables() -> CodeTables:
    count = code_count()
    branch = bytearray(count)
    memref = bytearray(count)
    immediate = bytearray(count)
    for code in range(count):
        info = OpCodeInfo(cast(Any, code))
        kinds = [info.op_kind(i) for i in range(info.op_count)]
        if any(k in _BRANCH_KINDS for k in kinds):
            branch[code] = 1
        elif info.mnemonic in _REF_MNEMONICS:
            memref[code] = 1
        if code in _IMM_CODES:
            immediate[code] = 1
    return CodeTables(bytes(branch), bytes(memref), bytes(immediate))


@dataclass(frozen=True)
class Span:
    """Code to decode: ``size`` bytes at virtual address ``start``, file ``offset``."""

    start: int
    offset: int
    size: int


# (instruction code -> count, addresses referenced outside the span)
FunctionCode = tuple[dict[int, int], tuple[int, ...]]
EMPTY: FunctionCode = ({}, ())

try:  # the C helper behind Counter.update, without its per-call type checks
    from collections import _count_elements as _count  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Python implementations

    def _count(mapping: dict[int, int], iterable: Iterable[int]) -> None:
        mapping.update(Counter(iterable))


def _falls_through(insts: Sequence[Any]) -> bool:
    """Whether the last instruction before any trailing alignment NOPs lets execution run on."""
    for inst in reversed(insts):
        if inst.mnemonic in (Mnemonic.NOP, Mnemonic.INT3):
            continue  # padding (an unsized symbol's range runs up to the next function)
        return inst.flow_control in _FALLS_THROUGH and inst.code not in (Code.INVALID, Code.HLT)
    return False


def decode_span(code: bytes, start: int, immediates: bool, refs_wanted: bool = True) -> FunctionCode:
    """Summarize the instructions in ``code`` loaded at ``start``.

    ``refs_wanted`` False skips collecting references (when no call graph is built).
    """
    if len(code) <= PADDING_MAX and not code.translate(None, PADDING_BYTES):
        return EMPTY  # alignment padding between functions: NOPs, INT3, zeros
    counts: dict[int, int] = {}
    if not refs_wanted:
        _count(counts, map(_CODE, Decoder(64, code, ip=start)))
        return counts, ()
    tables = code_tables()
    insts = list(Decoder(64, code, ip=start))
    codes = list(map(_CODE, insts))
    _count(counts, codes)
    refs: set[int] = set(map(_TARGET, compress(insts, map(tables.branch.__getitem__, codes))))
    memrefs = list(compress(insts, map(tables.memref.__getitem__, codes)))
    if memrefs:
        refs.update(map(_RIP_ADDR, compress(memrefs, map(_IS_RIP, memrefs))))
    if immediates:
        refs.update(map(_IMM32, compress(insts, map(tables.immediate.__getitem__, codes))))
    end = start + len(code)
    if _falls_through(insts):
        refs.add(end)  # execution continues into the code that follows
    return counts, tuple(sorted([r for r in refs if not start <= r < end and r]))


def decode_spans(
    read: Callable[[int, int], bytes], spans: Sequence[Span], immediates: bool, refs_wanted: bool = True
) -> list[FunctionCode]:
    """Decode ``spans`` (sorted by address), reading their bytes with ``read(offset, size)``.

    Runs of spans that are adjacent in the file (up to ``CHUNK`` bytes) are
    read with one system call. Each span gets its own decoder: one pass over
    a whole run and a split by address measured slower (large lists).
    """
    results: list[FunctionCode] = []
    count = len(spans)
    i = 0
    while i < count:
        first = spans[i]
        base_start, base_offset = first.start, first.offset
        limit = base_offset + CHUNK
        end = first.start + first.size
        j = i + 1
        while j < count:
            span = spans[j]
            # Same distance in the file as in memory, in order, within the chunk.
            if span.offset - base_offset != span.start - base_start or span.start < end:
                break
            if span.offset + span.size > limit:
                break
            end = span.start + span.size
            j += 1
        block = read(base_offset, end - base_start)
        for span in spans[i:j]:
            at = span.start - base_start
            results.append(decode_span(block[at : at + span.size], span.start, immediates, refs_wanted))
        i = j
    return results
