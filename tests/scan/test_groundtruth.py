"""Ground truth: cpuguard's verdict against running the binary on an emulated CPU.

"cpuguard says BINARY can run on CPU" must equal "under qemu-user with
exactly that CPU's features, BINARY exits 0 and prints what it prints
natively" -- for every corpus binary and every model below. Output is
compared, not just the exit status: LZCNT on a CPU without it executes as
BSR and silently computes something else.

What cannot be emulated: QEMU's TCG (Debian 12, QEMU 7.2) implements no
AVX-512, so no model with AVX-512 is emulated. The x86-64-v4 and
skylake-avx512 builds are still checked against every model below (all
lack AVX-512, and those builds must be refused there) and against this
machine's own CPU, which runs every case natively.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from cpuguard.scan import scan_paths
from tests.conftest import need_tool
from tests.scan.conftest import Built, EmulatedCpu, emulated_cpu

# Oldest to newest; Intel and AMD; with and without LAHF in 64-bit mode
# (Opteron_G1), LZCNT (Haswell-noTSX lacks abm in libvirt), AVX, AVX2.
MODELS = (
    "Opteron_G1",
    "Conroe",
    "Penryn",
    "Nehalem",
    "Westmere",
    "SandyBridge",
    "IvyBridge",
    "Haswell-noTSX",
    "Broadwell-noTSX",
    "Skylake-Client-noTSX-IBRS",
    "Opteron_G3",
    "Opteron_G4",
    "EPYC",
)

# Real programs of this machine and a job for each: they and the libraries
# they load contain AVX2/AVX-512 code they only run where the CPU has it.
SYSTEM_PROGRAMS: dict[str, tuple[list[str], bytes | None]] = {
    "python3": (
        ["/usr/bin/python3", "-c",
         "import hashlib, zlib, json, math; d = b'cpuguard' * 5000; "
         "print(hashlib.sha256(d).hexdigest(), hashlib.blake2b(d).hexdigest()[:16], "
         "zlib.crc32(d), json.dumps(sorted({3: 1, 1: 2})), math.fsum([0.1] * 10))"],
        None,
    ),
    "openssl": (["/usr/bin/openssl", "dgst", "-sha256", "-sha512"], b"cpuguard\n" * 10000),
    "openssl-aes": (
        ["/usr/bin/openssl", "enc", "-aes-256-ctr", "-K", "00" * 32, "-iv", "00" * 16, "-a"],
        b"cpuguard\n" * 1000,
    ),
    "xz": (["/usr/bin/xz", "-c", "-9"], b"cpuguard\n" * 20000),
    "zstd": (["/usr/bin/zstd", "-c", "-19"], b"cpuguard\n" * 20000),
    "gzip": (["/usr/bin/gzip", "-c", "-n"], b"cpuguard\n" * 20000),
}  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    stdin: bytes | None
    native: bytes
    required: frozenset[str]
    why: str  # what cpuguard found, for the failure message


def _run(argv: list[str], stdin: bytes | None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=120, check=False)


def _required(path: str, cache: Path) -> tuple[frozenset[str], str]:
    report = scan_paths([Path(path)], follow_needed=True, cache_dir=cache)
    assert report.scanned, f"{path}: nothing scanned: {[f.skipped for f in report.files]}"
    needs = report.totals.required
    why = ", ".join(f"{u.feature} ({u.instructions} in {', '.join(u.examples[:2]) or u.evidence})" for u in needs)
    return frozenset(u.feature for u in needs), why


@pytest.fixture(scope="module")
def cases(corpus: dict[str, Built], tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    cache = tmp_path_factory.mktemp("scan-cache")
    result = []
    for built in corpus.values():
        required, why = _required(str(built.path), cache)
        result.append(Case(built.name, (str(built.path),), None, built.native_output.encode(), required, why))
    for name, (argv, stdin) in SYSTEM_PROGRAMS.items():
        if not Path(argv[0]).exists():
            continue
        native = _run(argv, stdin)
        assert native.returncode == 0, native.stderr
        required, why = _required(str(Path(argv[0]).resolve()), cache)
        result.append(Case(name, tuple(argv), stdin, native.stdout, required, why))
    return result


@pytest.fixture(scope="module")
def cpus() -> list[EmulatedCpu]:
    qemu = need_tool("qemu-x86_64")
    return [emulated_cpu(qemu, model) for model in MODELS]


def test_every_case_runs_natively_and_cpuguard_agrees(cases: list[Case]) -> None:
    """This machine runs every case, so its own CPU must satisfy every verdict."""
    from cpuguard.hosts.cpuinfo import parse_cpuinfo
    from cpuguard.vocabulary import load_vocabulary

    text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    host = parse_cpuinfo(text, "/proc/cpuinfo", load_vocabulary())
    refused = [f"{c.name}: {sorted(c.required - host.flags)}" for c in cases
               if not c.required <= host.flags]  # fmt: skip
    assert not refused


def test_verdicts_match_qemu(cases: list[Case], cpus: list[EmulatedCpu], summary_lines: list[str]) -> None:
    qemu = need_tool("qemu-x86_64")
    pairs = [(case, cpu) for case in cases for cpu in cpus]

    def emulate(pair: tuple[Case, EmulatedCpu]) -> bool:
        case, cpu = pair
        done = _run([qemu, "-cpu", cpu.cpu_option, *case.argv], case.stdin)
        return done.returncode == 0 and done.stdout == case.native

    with ThreadPoolExecutor(max_workers=4) as pool:
        truths = list(pool.map(emulate, pairs))

    counts = {"tp": 0, "tn": 0, "fp": 0, "fn": 0}
    mismatches = []
    for (case, cpu), runs in zip(pairs, truths, strict=True):
        says_runs = case.required <= cpu.features
        if says_runs and runs:
            counts["tn"] += 1
        elif not says_runs and not runs:
            counts["tp"] += 1
        elif says_runs:
            counts["fn"] += 1
            mismatches.append(f"{case.name} on {cpu.model}: cpuguard allows, qemu fails")
        else:
            counts["fp"] += 1
            missing = sorted(case.required - cpu.features)
            mismatches.append(
                f"{case.name} on {cpu.model}: cpuguard refuses (missing {missing}), qemu runs it [{case.why}]"
            )
    refusals = counts["tp"] + counts["fp"]
    failures = counts["tp"] + counts["fn"]
    precision = counts["tp"] / refusals if refusals else 1.0
    recall = counts["tp"] / failures if failures else 1.0
    summary = (
        f"scan ground truth: {len(pairs)} (binary, CPU) pairs over {len(cases)} binaries and"
        f" {len(cpus)} emulated models: refusals precision {precision:.3f}, recall {recall:.3f}"
        f" (tp {counts['tp']}, fp {counts['fp']}, fn {counts['fn']}, tn {counts['tn']})"
    )
    summary_lines.append(summary)
    dropped = {cpu.model: cpu.dropped for cpu in cpus if cpu.dropped}
    summary_lines.append(f"features TCG cannot emulate (left out of those models): {dropped}")
    print(summary)
    assert not mismatches, "\n".join(mismatches)
    assert counts["tp"] > 0 and counts["tn"] > 0  # the corpus exercises both answers


def test_system_programs_are_not_said_to_need_what_they_dispatch(cases: list[Case]) -> None:
    by_name = {c.name: c for c in cases}
    present = [n for n in SYSTEM_PROGRAMS if n in by_name]
    assert "python3" in present
    for name in present:
        extensions = by_name[name].required & {
            "avx", "avx2", "avx512f", "avx512bw", "avx512vl", "sse4_2", "ssse3", "aes",
            "pclmulqdq", "sha_ni", "bmi2",
        }  # fmt: skip
        assert not extensions, f"{name}: {by_name[name].why}"
