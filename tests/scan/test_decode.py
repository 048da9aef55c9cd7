"""Decoding summaries (decode.py): counts and references per span, on any bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from iced_x86 import Code, Decoder

from cpuguard.scan.decode import EMPTY, Span, decode_span, decode_spans

START = 0x401000


def test_counts_branch_targets_and_rip_relative_references() -> None:
    # call +0x100; lea rax,[rip+0x2000]; mov eax,[rip+0x10]; jmp -2 (into itself); ret
    code = bytes.fromhex("e800010000488d05002000008b0510000000ebfec3")
    counts, refs = decode_span(code, START, immediates=False)
    assert sum(counts.values()) == 5
    assert counts[Code.CALL_REL32_64] == 1 and counts[Code.RETNQ] == 1
    after_call = START + 5
    after_lea = after_call + 7
    after_mov = after_lea + 6
    assert refs == tuple(sorted({after_call + 0x100, after_lea + 0x2000, after_mov + 0x10}))


def test_code_that_runs_off_its_end_refers_to_what_follows() -> None:
    # mov rcx,[fs:rax]; nop dword [rax+rax] -- glibc's __strcasecmp_avx2 continuing into __strcasecmp_l_avx2
    falls = bytes.fromhex("648b08") + bytes.fromhex("0f1f440000")
    assert decode_span(falls, START, immediates=False)[1] == (START + len(falls),)
    # je +0 at the end also continues
    assert decode_span(bytes.fromhex("7400"), START, immediates=False)[1] == (START + 2,)
    # ret, jmp or a call (to a noreturn function) followed by alignment padding does not
    for ending in ("c3", "ebfe", "e800000000"):
        code = bytes.fromhex("31c0" + ending + "0f1f4000cc")
        assert START + len(code) not in decode_span(code, START, immediates=False)[1]


def test_immediates_count_only_for_non_pie_programs() -> None:
    code = bytes.fromhex("bf00104000c3")  # mov edi,0x401000 (a function pointer in a non-PIE program)
    assert decode_span(code, 0x500000, immediates=True)[1] == (0x401000,)
    assert decode_span(code, 0x500000, immediates=False)[1] == ()


def test_alignment_padding_is_not_decoded() -> None:
    assert decode_span(bytes.fromhex("662e0f1f840000000000cccc90"), START, immediates=False) is EMPTY
    assert decode_span(bytes.fromhex("c3"), START, immediates=False) != EMPTY


def test_spans_read_together_decode_like_spans_read_alone() -> None:
    blob = bytes.fromhex("5548 89e5 5dc30f1f4000c5fdfec1 c3f30fb8c0 c3".replace(" ", ""))
    spans = [Span(START, 0, 6), Span(START + 6, 6, 4), Span(START + 10, 10, 5), Span(START + 15, 15, 5)]
    together = decode_spans(lambda offset, size: blob[offset : offset + size], spans, immediates=False)
    alone = [decode_span(blob[s.offset : s.offset + s.size], s.start, False) for s in spans]
    assert together == alone
    assert together[2][0] == {Code.VEX_VPADDD_YMM_YMM_YMMM256: 1, Code.RETNQ: 1}


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=512))
def test_any_bytes_decode_without_error(code: bytes) -> None:
    counts, refs = decode_span(code, START, immediates=True)
    if counts:
        assert sum(counts.values()) == sum(1 for _ in Decoder(64, code, ip=START))
    assert all(not START <= r < START + len(code) and r for r in refs)
    assert list(refs) == sorted(refs)
