"""CPU checks kept in a structure: a CPUID result stored in a field, tested far away.

zstd's ``DYNAMIC_BMI2`` (lib/common/portability_macros.h) probes the CPU
once, when a context is made (``dctx->bmi2 = ZSTD_cpuSupportsBmi2()``), and
tests the field before each call: ``if (dctx->bmi2) return f_bmi2(...);``
followed by the inlined default body. The flag lives in heap memory, so it
is neither a named CPU variable nor a global that CPUID code writes, and
the default version is inlined, so there are no twins either. What shows
the dispatch is the field: a function that runs CPUID stores a value
derived from its result at ``[reg+disp]``, and a function that loads
``[reg+disp]`` with the same displacement (not from the stack) and tests it
is checking the CPU.

Only displacements of 128 and more are taken: a field near the start of a
structure (``[rdi+8]``) is one of thousands of structures' fields, while
``dctx->bmi2`` sits at ``+0x7150``. Everything here runs only for files with
CPUID code and only decodes again what it has to.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, cast

from iced_x86 import (
    Decoder,
    FlowControl,
    Instruction,
    InstructionInfo,
    InstructionInfoFactory,
    Mnemonic,
    OpAccess,
    OpKind,
    Register,
)
from iced_x86 import RegisterExt as Reg

from cpuguard.scan.decode import FunctionCode, Span

MIN_DISPLACEMENT = 0x80
_MAX_DISPLACEMENT = 1 << 31  # larger u64 values are negative displacements (locals below a frame)
LOOKAHEAD = 3  # instructions between loading a field and testing it
PASSES = 8  # over a probing function: states at jump targets only grow, and settle in two or three

_NOT_A_STRUCTURE = frozenset({Register.NONE, Register.RSP, Register.ESP, Register.RIP, Register.EIP})
_READ = frozenset({OpAccess.READ, OpAccess.COND_READ, OpAccess.READ_WRITE, OpAccess.READ_COND_WRITE})
_WRITE = frozenset({OpAccess.WRITE, OpAccess.COND_WRITE, OpAccess.READ_WRITE, OpAccess.READ_COND_WRITE})
_PROBES = frozenset({Mnemonic.CPUID, Mnemonic.XGETBV})
_ZEROING = frozenset({Mnemonic.XOR, Mnemonic.SUB, Mnemonic.PXOR, Mnemonic.XORPS})
_LOADS = frozenset({Mnemonic.MOV, Mnemonic.MOVZX, Mnemonic.MOVSX, Mnemonic.MOVSXD})
_TESTS = frozenset({Mnemonic.TEST, Mnemonic.CMP, Mnemonic.BT})
_ENDS_BLOCK = frozenset({FlowControl.UNCONDITIONAL_BRANCH, FlowControl.RETURN, FlowControl.INDIRECT_BRANCH})
_FLAGS = -1  # a slot for "the flags hold something derived from CPUID", beside register numbers


def _full(register: int) -> int:
    """The 64-bit register an 8/16/32-bit one is part of (iced's registers are plain ints)."""
    value = cast(Any, register)
    full: int = Reg.full_register(value) if Reg.is_gpr(value) else register
    return full


def _structure_field(base: int, displacement: int) -> int | None:
    if base in _NOT_A_STRUCTURE or not MIN_DISPLACEMENT <= displacement < _MAX_DISPLACEMENT:
        return None
    return displacement


def cpuid_fields(code: bytes, start: int) -> frozenset[int]:
    """Displacements at which the code stores values derived from CPUID or XGETBV results.

    A forward "may be derived from CPUID" analysis over registers and flags,
    repeated until the states at jump targets settle: zstd's leaf-7 probe
    sits after the store it feeds, and jumps back to it.
    """
    instructions = list(Decoder(64, code, ip=start))
    factory = InstructionInfoFactory()
    infos = [factory.info(inst) for inst in instructions]
    at_target: dict[int, frozenset[int]] = {}
    found: set[int] = set()
    for _ in range(PASSES):
        changed = False
        state: set[int] = set()
        for inst, info in zip(instructions, infos, strict=True):
            state |= at_target.get(inst.ip, frozenset())
            _step(inst, info, state, found)
            if inst.flow_control in (FlowControl.CONDITIONAL_BRANCH, FlowControl.UNCONDITIONAL_BRANCH):
                target = inst.near_branch_target
                merged = at_target.get(target, frozenset()) | state
                if target and merged != at_target.get(target):
                    at_target[target] = frozenset(merged)
                    changed = True
            if inst.flow_control in _ENDS_BLOCK:
                state = set()
        if not changed:
            break
    return frozenset(found)


def _step(inst: Instruction, info: InstructionInfo, state: set[int], found: set[int]) -> None:
    used_memory = info.used_memory()
    addressing = {_full(m.base) for m in used_memory} | {_full(m.index) for m in used_memory}
    reads: set[int] = set()
    writes: list[tuple[int, int, int]] = []
    for used in info.used_registers():
        register = _full(used.register)
        if used.access in _READ and register not in addressing:
            reads.add(register)
        if used.access in _WRITE:
            writes.append((register, used.access, Reg.size(used.register)))
    derived = not state.isdisjoint(reads) or (_FLAGS in state and inst.rflags_read != 0)
    if inst.mnemonic in _ZEROING and inst.op_count == 2 and inst.op0_kind == inst.op1_kind == OpKind.REGISTER:
        derived = derived and inst.op0_register != inst.op1_register  # xor eax, eax
    if inst.mnemonic in _PROBES:
        derived = True
    for memory in used_memory:
        if memory.access in _WRITE and derived:
            field = _structure_field(_full(memory.base), memory.displacement)
            if field is not None:
                found.add(field)
    for register, access, size in writes:
        if derived:
            state.add(register)
        elif access == OpAccess.WRITE and size >= 4:  # a partial write keeps the rest
            state.discard(register)
    if inst.rflags_modified:
        if derived:
            state.add(_FLAGS)
        else:
            state.discard(_FLAGS)


def field_is_tested(code: bytes, start: int, fields: Collection[int]) -> bool:
    """Whether the code tests one of ``fields`` of a structure: ``cmp [reg+disp]``, or loads and tests it."""
    instructions = list(Decoder(64, code, ip=start))
    for n, inst in enumerate(instructions):
        if inst.mnemonic not in _LOADS and inst.mnemonic not in _TESTS:
            continue
        if not any(inst.op_kind(i) == OpKind.MEMORY for i in range(inst.op_count)):
            continue
        if _structure_field(_full(inst.memory_base), inst.memory_displacement) not in fields:
            continue
        if inst.mnemonic in _TESTS:
            return True
        if inst.op0_kind != OpKind.REGISTER:
            continue  # a store, not a load
        loaded: int = _full(inst.op0_register)
        for later in instructions[n + 1 : n + 1 + LOOKAHEAD]:
            if later.mnemonic in _TESTS and any(
                later.op_kind(i) == OpKind.REGISTER and _full(later.op_register(i)) == loaded
                for i in range(later.op_count)
            ):
                return True
    return False


def _encodings(fields: Iterable[int]) -> list[bytes]:
    return [field.to_bytes(4, "little") for field in fields]


def field_checks(
    read: Callable[[int, int], bytes], spans: Sequence[Span], codes: Sequence[FunctionCode], probes: frozenset[int]
) -> frozenset[int]:
    """Indexes of the spans that test a structure field CPUID code wrote (see the module docstring).

    ``codes`` are the spans' decoded summaries, ``probes`` the instruction
    codes of CPUID and XGETBV. Spans are read again with ``read(offset, size)``:
    first those that probe the CPU, then, when they store to a field, those
    whose bytes hold the field's displacement.
    """
    fields: set[int] = set()
    for span, (counts, _) in zip(spans, codes, strict=True):
        if not probes.isdisjoint(counts):
            fields |= cpuid_fields(read(span.offset, span.size), span.start)
    if not fields:
        return frozenset()
    encodings = _encodings(fields)
    found: set[int] = set()
    for i, (span, (counts, _)) in enumerate(zip(spans, codes, strict=True)):
        if not counts:
            continue
        code = read(span.offset, span.size)
        if any(e in code for e in encodings) and field_is_tested(code, span.start, fields):
            found.add(i)
    return frozenset(found)
