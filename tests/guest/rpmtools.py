"""Real RPM packages and a real RPM SQLite database, made with rpmbuild and rpm.

Used by the rpmdb parser's tests and by the image tests that assemble a Rocky
Linux 9-like guest root: ``install_packages(root, [Package(...)])`` builds each
package with ``rpmbuild`` and installs it with ``rpm --root`` so that
``root/var/lib/rpm/rpmdb.sqlite`` is the database rpm itself wrote.
Without rpm the calling test is skipped locally and fails under CI=true.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import need_tool

DBPATH = "/var/lib/rpm"

# Keep rpmbuild from touching what it packs (strip, build-id links, debuginfo, python
# byte-compiling) or adding automatic dependencies: the tests want the bytes given.
_BUILD_DEFINES = {
    "__os_install_post": "%{nil}",
    "debug_package": "%{nil}",
    "_build_id_links": "none",
    "_binary_payload": "w9.gzdio",
}


@dataclass(frozen=True)
class Package:
    """One package: ``files`` maps an absolute path in the guest to its contents."""

    name: str
    files: Mapping[str, bytes] = field(default_factory=dict)
    version: str = "1.0"
    release: str = "1"
    arch: str = "noarch"
    #: paths the package owns without shipping them (``%ghost``)
    ghosts: Sequence[str] = ()


def _defines(values: Mapping[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--define", f"{key} {value}")]


def _spec(package: Package, staging: Path) -> str:
    listed = [*(f'"{path}"' for path in package.files), *(f'%ghost "{path}"' for path in package.ghosts)]
    return "\n".join(
        [
            f"Name: {package.name}",
            f"Version: {package.version}",
            f"Release: {package.release}",
            "Summary: cpuguard test package",
            "License: Apache-2.0",
            f"BuildArch: {package.arch}",
            "AutoReqProv: no",
            "%description",
            "A package built by cpuguard's tests.",
            "%install",
            f"cp -a '{staging}/.' %{{buildroot}}/",
            "%files",
            *listed,
            "",
        ]
    )


def build_package(package: Package, workdir: Path) -> Path:
    """Build ``package`` with rpmbuild under ``workdir``; return the .rpm file."""
    rpmbuild = need_tool("rpmbuild")
    top = workdir / f"build-{package.name}"
    staging = top / "staging"
    staging.mkdir(parents=True)
    for path, content in package.files.items():
        target = staging / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(0o755 if content.startswith((b"\x7fELF", b"#!")) else 0o644)
    spec = top / f"{package.name}.spec"
    spec.write_text(_spec(package, staging))
    defines = {**_BUILD_DEFINES, "_topdir": str(top / "rpmbuild")}
    subprocess.run(
        [rpmbuild, "-bb", "--quiet", "--target", package.arch, *_defines(defines), str(spec)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (built,) = (top / "rpmbuild" / "RPMS").rglob("*.rpm")
    return built


def install_packages(root: Path, packages: Sequence[Package], *, dbpath: str = DBPATH, justdb: bool = False) -> Path:
    """Build ``packages`` and install them into ``root`` with rpm's SQLite backend.

    ``justdb`` records them in the database without writing their files. Returns
    the database file, ``root/<dbpath>/rpmdb.sqlite``.
    """
    rpm = need_tool("rpm")
    workdir = root.parent / f".{root.name}-rpmbuild"
    workdir.mkdir(exist_ok=True)
    try:
        built = [build_package(package, workdir) for package in packages]
        options = ["--nodeps", "--noscripts", "--ignorearch", "--ignoreos", *(["--justdb"] if justdb else [])]
        subprocess.run(
            [rpm, "--root", str(root), "--dbpath", dbpath, *_defines({"_db_backend": "sqlite"}), "-i", *options]
            + [str(path) for path in built],
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    db = root / dbpath.lstrip("/") / "rpmdb.sqlite"
    assert db.is_file(), f"rpm wrote no SQLite database at {db} (rpm --eval %_db_backend?)"
    return db


def rpm_file_list(root: Path, *, dbpath: str = DBPATH) -> set[str]:
    """What rpm itself says the installed packages own (``rpm -qal``): the reference."""
    rpm = need_tool("rpm")
    result = subprocess.run(
        [rpm, "--root", str(root), "--dbpath", dbpath, *_defines({"_db_backend": "sqlite"}), "-qal"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return {line for line in result.stdout.decode("utf-8", "surrogateescape").splitlines() if line.startswith("/")}
