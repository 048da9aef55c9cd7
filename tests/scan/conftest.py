"""Fixtures for the scanner's tests: a corpus built with gcc, qemu-user CPUs.

The corpus is compiled at test time from ``corpus/*.c`` with the flags of
``CORPUS`` (name -> source, gcc flags). Tools that are missing skip the
test locally and fail it under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import need_tool

SOURCES = Path(__file__).resolve().parent / "corpus"

STATIC = ["-static"]
STRIP = ["-s"]
NOPIE = ["-no-pie"]

# name -> (source file, gcc flags). -O3 so that loops are vectorized.
CORPUS: dict[str, tuple[str, list[str]]] = {}
for _arch in (
    "x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4", "nehalem", "sandybridge", "haswell",
    "skylake-avx512",
):  # fmt: skip
    CORPUS[f"kernels-{_arch}"] = ("kernels.c", [f"-march={_arch}"])
for _arch in ("x86-64", "x86-64-v2", "x86-64-v3", "haswell"):
    CORPUS[f"kernels-{_arch}-static-stripped"] = ("kernels.c", [f"-march={_arch}", *STATIC, *STRIP])
for _arch in ("x86-64", "x86-64-v3"):
    CORPUS[f"kernels-{_arch}-nopie-stripped"] = ("kernels.c", [f"-march={_arch}", *NOPIE, *STRIP])
CORPUS["kernels-lzcnt"] = ("kernels.c", ["-march=x86-64", "-mlzcnt"])
CORPUS["kernels-popcnt"] = ("kernels.c", ["-march=x86-64", "-mpopcnt"])
CORPUS["kernels-movbe"] = ("kernels.c", ["-march=x86-64", "-mmovbe"])
CORPUS["kernels-cet"] = ("kernels.c", ["-march=x86-64", "-fcf-protection=full"])
# The loader enforces GNU_PROPERTY_X86_ISA_1_NEEDED even for baseline code.
CORPUS["kernels-isa-note-v3"] = ("kernels.c", ["-march=x86-64", "-Wl,-z,x86-64-v3"])
for _name in ("clones", "supports", "ifunc"):
    CORPUS[_name] = (f"{_name}.c", ["-march=x86-64"])
    CORPUS[f"{_name}-static"] = (f"{_name}.c", ["-march=x86-64", *STATIC])
    CORPUS[f"{_name}-static-stripped"] = (f"{_name}.c", ["-march=x86-64", *STATIC, *STRIP])
    CORPUS[f"{_name}-nopie-stripped"] = (f"{_name}.c", ["-march=x86-64", *NOPIE, *STRIP])
CORPUS["twins"] = ("twins.c", ["-march=x86-64"])
CORPUS["twins-stripped"] = ("twins.c", ["-march=x86-64", *STRIP])
CORPUS["twins-static-stripped"] = ("twins.c", ["-march=x86-64", *STATIC, *STRIP])
for _suffix, _flags in (("", []), ("-stripped", STRIP), ("-static-stripped", [*STATIC, *STRIP])):
    CORPUS[f"field-flag{_suffix}"] = ("field_flag.c", ["-march=x86-64", *_flags])
CORPUS["exports-rdynamic"] = ("exports.c", ["-march=x86-64", "-rdynamic"])
CORPUS["exports-rdynamic-stripped"] = ("exports.c", ["-march=x86-64", "-rdynamic", *STRIP])
_NATIVE = ["-march=native", '-DAST_BUILDOPTS="BUILD_NATIVE, OPTIONAL_API"']
CORPUS["asterisk-native"] = ("asterisk_version.c", _NATIVE)
CORPUS["asterisk-native-stripped"] = ("asterisk_version.c", [*_NATIVE, *STRIP])
CORPUS["asterisk-generic"] = ("asterisk_version.c", ["-march=x86-64", '-DAST_BUILDOPTS="OPTIONAL_API"'])
# Asterisk 22: make_buildopts_h keeps BUILD_NATIVE out of AST_BUILDOPTS, only AST_BUILDOPTS_ALL has it
_NATIVE_22 = ["-march=native", '-DAST_BUILDOPTS="OPTIONAL_API"', '-DAST_BUILDOPTS_ALL="BUILD_NATIVE, OPTIONAL_API"']
CORPUS["asterisk22-native"] = ("asterisk_version.c", _NATIVE_22)
CORPUS["asterisk22-native-stripped"] = ("asterisk_version.c", [*_NATIVE_22, *STRIP])
CORPUS["lahf"] = ("lahf.c", [])
CORPUS["lahf-static-stripped"] = ("lahf.c", [*STATIC, *STRIP])


@dataclass(frozen=True)
class Built:
    name: str
    path: Path
    flags: tuple[str, ...]
    native_output: str  # stdout of a native run (this machine runs every case)


def _build(gcc: str, out: Path, name: str, source: str, flags: list[str]) -> Built:
    target = out / name
    subprocess.run(
        [gcc, "-O3", "-o", str(target), str(SOURCES / source), *flags],
        check=True,
        capture_output=True,
        text=True,
    )
    run = subprocess.run([str(target)], capture_output=True, text=True, timeout=60, check=True)
    return Built(name, target, tuple(flags), run.stdout)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """Every CORPUS entry, compiled and run natively once."""
    gcc = need_tool("gcc")
    out = tmp_path_factory.mktemp("corpus")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        jobs = {name: pool.submit(_build, gcc, out, name, source, flags) for name, (source, flags) in CORPUS.items()}
        return {name: job.result() for name, job in jobs.items()}


@pytest.fixture
def scan_cache(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cache"
    yield path


# -- qemu-user CPUs -----------------------------------------------------------

_UNSUPPORTED = re.compile(r"TCG doesn't support requested feature: \S+?\.([\w.-]+) \[")


@dataclass(frozen=True)
class EmulatedCpu:
    """A libvirt cpu_map model as qemu-user emulates it."""

    model: str
    cpu_option: str  # the -cpu argument
    features: frozenset[str]  # canonical names qemu really offers
    dropped: tuple[str, ...]  # model features TCG cannot offer


def emulated_cpu(qemu: str, model: str) -> EmulatedCpu:
    """Exactly the features of libvirt's ``model``, starting from QEMU's featureless base CPU.

    QEMU's own models differ from libvirt's, so the CPU is built feature by
    feature (libvirt and QEMU share most spellings). level/xlevel are set so
    that CPUID leaves 7 and 0xD exist; without them glibc refuses to start.
    Features TCG does not implement are dropped (QEMU warns about each).
    """
    from cpuguard.cpumap import load_cpu_map_data
    from cpuguard.vocabulary import load_vocabulary

    data = load_cpu_map_data()
    vocabulary = load_vocabulary()
    definition = data.models[model]
    libvirt_names = sorted(data.expanded(model))
    family, number = definition.signatures[0] if definition.signatures else (6, 0)
    vendor = data.vendors.get(definition.vendor or "Intel", "GenuineIntel")
    option = f"base,vendor={vendor},family={family},model={number},level=13,xlevel=0x80000008," + ",".join(
        f"+{name}" for name in libvirt_names
    )
    probe = subprocess.run([qemu, "-cpu", option, "/bin/true"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    dropped = tuple(_UNSUPPORTED.findall(probe.stderr))
    offered = {vocabulary.canonical(n) for n in libvirt_names}
    offered -= {vocabulary.canonical(n) for n in dropped}
    return EmulatedCpu(model, option, frozenset(offered), dropped)


_SUMMARY = pytest.StashKey[list[str]]()


@pytest.fixture
def summary_lines(request: pytest.FixtureRequest) -> list[str]:
    """Lines printed at the end of the run (precision/recall of the ground truth)."""
    return request.config.stash.setdefault(_SUMMARY, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the ground-truth precision/recall whether or not -s was given."""
    lines = terminalreporter.config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("cpuguard scan ground truth")
        for line in lines:
            terminalreporter.write_line(line)
