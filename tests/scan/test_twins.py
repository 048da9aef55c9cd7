"""Twin builds of one body (twins.py), on instruction mixes assembled by hand."""

from __future__ import annotations

from iced_x86 import Code

from cpuguard.scan.features import default_feature_table
from cpuguard.scan.twins import find_twins, shape, similarity

BASELINE = frozenset({"sse", "sse2"})
# A loop body built without BMI2 (SHL/SHR by CL, ROL) and with it (SHLX/SHRX, RORX).
PLAIN = {Code.SHL_RM64_CL: 4, Code.SHR_RM64_CL: 4, Code.ROL_RM64_IMM8: 2, Code.ADD_RM64_R64: 6,
         Code.XOR_RM64_R64: 4, Code.MOV_R64_RM64: 9, Code.CMP_RM64_R64: 1, Code.JNE_REL8_64: 1,
         Code.RETNQ: 1}  # fmt: skip
BMI2 = {Code.VEX_SHLX_R64_RM64_R64: 4, Code.VEX_SHRX_R64_RM64_R64: 4, Code.VEX_RORX_R64_RM64_IMM8: 2,
        Code.ADD_RM64_R64: 6, Code.XOR_RM64_R64: 4, Code.MOV_R64_RM64: 5, Code.CMP_RM64_R64: 1,
        Code.JNE_REL8_64: 1, Code.RETNQ: 1}  # fmt: skip
OTHER = {Code.POPCNT_R64_RM64: 6, Code.ADD_RM64_R64: 2, Code.CALL_REL32_64: 8, Code.LEA_R64_M: 8, Code.RETNQ: 1}


def test_isa_neutral_shapes_make_twins_alike() -> None:
    table = default_feature_table()
    assert similarity(shape(PLAIN, table), shape(BMI2, table)) > 0.9
    assert similarity(shape(PLAIN, table), shape(OTHER, table)) < 0.3
    assert similarity({}, {}) == 0.0


def test_a_caller_of_both_builds_makes_the_richer_one_a_twin() -> None:
    table = default_feature_table()
    edges = [[1, 2], [], [], [2, 3], []]
    needed = [{}, {}, {"bmi2": 10}, {}, {"popcnt": 6}]
    mixes = [{Code.RETNQ: 1}, PLAIN, BMI2, {Code.RETNQ: 1}, OTHER]
    assert find_twins(edges, needed, mixes, BASELINE, table) == {(0, 2): 1}


def test_different_code_or_no_plainer_build_is_not_a_twin() -> None:
    table = default_feature_table()
    # Caller 0 calls a BMI2 function and an unrelated POPCNT one: neither is a build of the other.
    edges = [[2, 4]]
    needed = [{}, {}, {"bmi2": 10}, {}, {"popcnt": 6}]
    mixes = [{}, PLAIN, BMI2, {}, OTHER]
    assert find_twins(edges, needed, mixes, BASELINE, table) == {}
    # Both builds use BMI2: no choice between extensions happens here.
    assert find_twins([[1, 2]], [{}, {"bmi2": 1}, {"bmi2": 10}], [{}, PLAIN, BMI2], BASELINE, table) == {}
