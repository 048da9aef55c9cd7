"""CPU checks kept in a structure field (fields.py), on hand-assembled code.

The bytes are GNU as output for the Intel-syntax listing beside each.
"""

from __future__ import annotations

from cpuguard.scan.fields import cpuid_fields, field_is_tested

START = 0x401000

# mov eax, 7; xor ecx, ecx; cpuid; shr ebx, 8; and ebx, 1
# mov [rdi+0x7150], ebx        <- the BMI2 bit: a CPU field
# mov dword [rdi+0x7154], 1    <- a constant, not from CPUID
# mov [rsp+0x100], ebx         <- the stack, not a structure
# mov [rdi+8], ebx             <- too near a structure's start to tell apart
# mov [rdi+0x7158], rsi        <- an argument, not from CPUID
# ret
PROBE = bytes.fromhex(
    "b807000000 31c9 0fa2 c1eb08 83e301 899f50710000 c7875471000001000000 899c2400010000 895f08 4889b758710000 c3"
)

# xor ecx, ecx; jmp probe; store: mov [rsi+0x7150], ecx; ret
# probe: mov eax, 7; cpuid; mov ecx, ebx; and ecx, 1; jmp store
# (zstd's layout: the leaf-7 probe sits after the store it feeds)
PROBE_AFTER_STORE = bytes.fromhex("31c9 eb07 898e50710000 c3 b807000000 0fa2 89d9 83e101 ebeb")


def test_a_value_derived_from_cpuid_stored_in_a_structure_is_a_cpu_field() -> None:
    assert cpuid_fields(PROBE, START) == frozenset({0x7150})


def test_the_probe_is_followed_around_jumps() -> None:
    assert cpuid_fields(PROBE_AFTER_STORE, START) == frozenset({0x7150})


def test_testing_the_field_is_a_check_and_passing_it_on_is_not() -> None:
    fields = frozenset({0x7150})
    # mov eax, [rbx+0x7150]; test eax, eax; jne +1; ret; ret
    assert field_is_tested(bytes.fromhex("8b8350710000 85c0 7501 c3 c3"), START, fields)
    # cmp dword [rbx+0x7150], 0; ret
    assert field_is_tested(bytes.fromhex("83bb5071000000 c3"), START, fields)
    # mov ecx, [rbx+0x7150]; call self; ret (the callee gets the flag as an argument)
    assert not field_is_tested(bytes.fromhex("8b8b50710000 e8f5ffffff c3"), START, fields)
    # the same test of another field
    assert not field_is_tested(bytes.fromhex("83bb5071000000 c3"), START, frozenset({0x7154}))
