"""Stock Debian programs that choose CPU code at run time, against qemu-user (issue 14, item 7).

``grub-install`` (grub2-common) carries grub's copy of zstd, whose
``DYNAMIC_BMI2`` keeps a CPUID flag in the decompression context and calls
the BMI2 decoder only when it is set (fields.py); ``mkfs.btrfs``
(btrfs-progs) is linked with -rdynamic and exports a SHA-NI
``sha256_process_x86`` that nothing in it calls. Neither needs BMI2 or
SHA-NI: cpuguard allows them on CPUs without, and the programs run there.

``data/btrfs-zstd-words.img.xz`` is a 16 MiB btrfs (``mkfs.btrfs --mixed``)
holding one text file written with ``mount -o compress-force=zstd``:
``grub-fstest`` (grub-common, the same grub and zstd as ``grub-install``)
reading it runs the decompressor, which ``grub-install --version`` does not.
"""

from __future__ import annotations

import lzma
import subprocess
from pathlib import Path

import pytest

from tests.conftest import in_ci, need_tool, run_cpuguard
from tests.scan.conftest import emulated_cpu

DATA = Path(__file__).resolve().parent / "data"
GRUB_INSTALL = Path("/usr/sbin/grub-install")  # grub2-common
GRUB_FSTEST = Path("/usr/bin/grub-fstest")  # grub-common, a dependency of grub2-common
MKFS_BTRFS = Path("/usr/sbin/mkfs.btrfs")  # btrfs-progs


def _need(path: Path, package: str) -> Path:
    """A skip locally, a failure under CI (scripts/install --test installs the package)."""
    if not path.exists():
        message = f"{path} is not installed (Debian package {package}; scripts/install --test installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def _cached(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


def _words(text: str) -> list[str]:
    """The words of an answer, however the renderer wraps its lines."""
    return text.split()


def _emulated(argv: list[str], model: str) -> subprocess.CompletedProcess[bytes]:
    qemu = need_tool("qemu-x86_64")
    cpu = emulated_cpu(qemu, model)
    return subprocess.run([qemu, "-cpu", cpu.cpu_option, *argv], capture_output=True, timeout=300, check=False)


def test_grub_install_is_allowed_on_westmere(tmp_path: Path) -> None:
    grub = _need(GRUB_INSTALL, "grub2-common")
    done = run_cpuguard("check", "binary", str(grub), "host", "uarch:westmere", env=_cached(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _words(done.stdout) == _words(
        f"ALLOW  {grub} can run on uarch:westmere\n"
        f"  levels: {grub} uses features up to x86-64-v1; uarch:westmere offers all of x86-64-v2\n"
        "  host facts: uarch:westmere\n"
    )
    assert done.stdout.startswith(f"ALLOW  {grub} can run on uarch:westmere\n")


@pytest.mark.parametrize("path", [GRUB_INSTALL, GRUB_FSTEST], ids=["grub-install", "grub-fstest"])
def test_grubs_zstd_bmi2_decoder_is_dispatched(path: Path) -> None:
    _need(path, "grub2-common")
    done = run_cpuguard("scan", "--no-cache", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "  needs x86-64-v1: nothing beyond the x86-64 baseline"
    assert any(line.startswith("    bmi2 (medium): ") for line in lines), done.stdout


def test_grub_install_runs_on_westmere() -> None:
    grub = str(_need(GRUB_INSTALL, "grub2-common"))
    native = subprocess.run([grub, "--version"], capture_output=True, timeout=60, check=True)
    emulated = _emulated([grub, "--version"], "Westmere")
    assert emulated.returncode == 0, emulated.stderr
    assert emulated.stdout == native.stdout


def test_grub_decompresses_zstd_on_westmere(tmp_path: Path) -> None:
    fstest = str(_need(GRUB_FSTEST, "grub-common"))
    image = tmp_path / "btrfs-zstd-words.img"
    image.write_bytes(lzma.decompress((DATA / "btrfs-zstd-words.img.xz").read_bytes()))
    argv = [fstest, str(image), "cat", "/words.txt"]
    native = subprocess.run(argv, capture_output=True, timeout=60, check=True)
    assert len(native.stdout) > 100_000 and native.stdout.endswith(b"\n")
    emulated = _emulated(argv, "Westmere")
    assert emulated.returncode == 0, emulated.stderr
    assert emulated.stdout == native.stdout


def test_mkfs_btrfs_is_allowed_on_skylake(tmp_path: Path) -> None:
    mkfs = _need(MKFS_BTRFS, "btrfs-progs")
    done = run_cpuguard("check", "binary", str(mkfs), "host", "uarch:skylake", env=_cached(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _words(done.stdout) == _words(
        f"ALLOW  {mkfs} can run on uarch:skylake\n"
        f"  levels: {mkfs} uses features up to x86-64-v1; uarch:skylake offers all of x86-64-v3\n"
        "  host facts: uarch:skylake\n"
    )
    assert done.stdout.startswith(f"ALLOW  {mkfs} can run on uarch:skylake\n")


def test_mkfs_btrfs_exported_sha_ni_code_is_not_an_entry() -> None:
    mkfs = _need(MKFS_BTRFS, "btrfs-progs")
    done = run_cpuguard("scan", "--no-cache", str(mkfs))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "  needs x86-64-v1: nothing beyond the x86-64 baseline"
    assert (
        "    sha_ni (medium): sha256_process_x86 is exported, but nothing in the program refers to it"
        " (a program is entered at its ELF entry, not through its exports)"
    ) in lines


def test_mkfs_btrfs_makes_a_sha256_filesystem_on_skylake(tmp_path: Path) -> None:
    mkfs = str(_need(MKFS_BTRFS, "btrfs-progs"))
    cpu = emulated_cpu(need_tool("qemu-x86_64"), "Skylake-Client")
    assert "sha_ni" not in cpu.features
    image = tmp_path / "scratch.img"
    with image.open("wb") as f:
        f.truncate(200 << 20)
    emulated = _emulated([mkfs, "--csum", "sha256", str(image)], "Skylake-Client")
    assert emulated.returncode == 0, emulated.stderr
    assert b"Checksum:           sha256\n" in emulated.stdout
    btrfs = need_tool("btrfs")  # btrfs-progs: the checksums it wrote verify
    check = subprocess.run([btrfs, "check", str(image)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
