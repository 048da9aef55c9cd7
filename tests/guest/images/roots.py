"""Guest roots: real Debian (debootstrap), Debian assembled from this machine, Rocky Linux 9-like."""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from tests.conftest import need_tool
from tests.guest.images.records import FSTAB, Root
from tests.guest.images.tools import ImageBuildError, install_file, read_os_release, resolve_in_root, run, symlink
from tests.guest.rpmtools import Package, install_packages


def _parse_status(text: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Installed packages of a dpkg status file: name -> (stanza text, fields)."""
    packages: dict[str, tuple[str, dict[str, str]]] = {}
    native = run([need_tool("dpkg"), "--print-architecture"]).stdout.decode().strip()
    for stanza in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line
            else:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        name = fields.get("Package", "")
        if fields.get("Status") != "install ok installed" or fields.get("Architecture") not in (native, "all"):
            continue
        packages[name] = (stanza.strip("\n"), fields)
    return packages


def _dependency_closure(packages: Mapping[str, tuple[str, dict[str, str]]], seeds: Sequence[str]) -> list[str]:
    provides: dict[str, str] = {}
    for name, (_, fields) in packages.items():
        for item in fields.get("Provides", "").split(","):
            provides.setdefault(re.split(r"[\s(:]", item.strip())[0], name)
    seen: list[str] = []
    todo = list(seeds)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        fields = packages[name][1]
        for relation in (fields.get("Pre-Depends", ""), fields.get("Depends", "")):
            for group in filter(None, (part.strip() for part in relation.split(","))):
                names = [re.split(r"[\s(:]", alt.strip())[0] for alt in group.split("|")]
                found = next((n for n in names if n in packages), None)
                found = found or next((provides[n] for n in names if n in provides), None)
                if found is None:
                    raise ImageBuildError(f"{name} needs {group!r}, not installed on this machine")
                todo.append(found)
    return sorted(seen)


# Left out of an assembled root: documentation and translations make it slower to
# build and change nothing a scan looks at; the dpkg lists keep naming them, as they
# do on a real system installed with dpkg's path-exclude.
_SKIPPED_PREFIXES = (
    "/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/", "/usr/share/lintian/",
    "/usr/lib/x86_64-linux-gnu/gconv/", "/usr/share/i18n/",
)  # fmt: skip
ASSEMBLED_SEEDS = ("base-files", "bash", "coreutils", "dash", "libc-bin")


def _merged_usr(root: Path, lib64: bool = True) -> None:
    for directory in ("usr/bin", "usr/sbin", "usr/lib", *(["usr/lib64"] if lib64 else [])):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        (root / link).symlink_to(target)


def _skeleton(root: Path) -> None:
    for directory, mode in (
        ("etc/systemd/system/multi-user.target.wants", 0o755), ("etc/ld.so.conf.d", 0o755), ("home", 0o755),
        ("root", 0o700), ("tmp", 0o1777), ("var/tmp", 0o1777), ("var/log", 0o755), ("opt", 0o755), ("srv", 0o755),
        ("usr/local/bin", 0o755), ("usr/local/sbin", 0o755), ("usr/local/lib", 0o755), ("dev", 0o755),
        ("proc", 0o555), ("sys", 0o555), ("run", 0o755),
    ):  # fmt: skip
        path = root / directory
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)


def assembled_debian_root(dest: Path, seeds: Sequence[str] = ASSEMBLED_SEEDS) -> Root:
    """A small Debian root made of this machine's own packages, in about a second.

    ``seeds`` and their Depends/Pre-Depends closure are copied from this machine
    (bash, coreutils, dash, libc, ld.so, libselinux...), with their dpkg stanzas and
    ``info/*.list`` files verbatim, merged-/usr links, ld.so.conf and an fstab.
    """
    status_text = Path("/var/lib/dpkg/status").read_text()
    installed = _parse_status(status_text)
    names = _dependency_closure(installed, seeds)
    dest.mkdir(parents=True)
    _merged_usr(dest)
    _skeleton(dest)
    info = dest / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    for name in names:
        arch = installed[name][1]["Architecture"]
        lists = [p for p in (Path(f"/var/lib/dpkg/info/{name}:{arch}.list"), Path(f"/var/lib/dpkg/info/{name}.list"))
                 if p.exists()]  # fmt: skip
        for listed in lists[:1]:
            shutil.copy2(listed, info / listed.name)
            for line in listed.read_text(errors="surrogateescape").splitlines():
                _copy_listed(dest, line)
    (dest / "var/lib/dpkg/status").write_text("\n\n".join(installed[name][0] for name in names) + "\n")
    (dest / "var/lib/dpkg/diversions").write_text("")
    # update-alternatives' links, as the awk package's postinst makes them: in no package's list
    awk = next((name for name in ("mawk", "gawk", "original-awk") if name in names), None)
    if awk:
        symlink(dest, "/etc/alternatives/awk", f"/usr/bin/{awk}")
        symlink(dest, "/usr/bin/awk", "/etc/alternatives/awk")
    install_file(dest, "/etc/fstab", FSTAB.encode())
    install_file(dest, "/etc/hostname", b"debian-guest\n")
    install_file(dest, "/etc/hosts", b"127.0.0.1\tlocalhost\n127.0.1.1\tdebian-guest\n")
    return _root_record(dest, "deb", tuple(names))


def _copy_listed(dest: Path, guest_path: str) -> None:
    if not guest_path.startswith("/") or guest_path == "/." or guest_path.startswith(_SKIPPED_PREFIXES):
        return
    host = Path(guest_path)
    try:
        info = host.lstat()
    except OSError:
        return  # listed but not on this machine (path-exclude, a diversion)
    target = resolve_in_root(dest, guest_path, follow_last=False)
    if target.is_symlink() or target.exists():
        return  # e.g. /lib64 of libc6's list, a merged-/usr link here
    target.parent.mkdir(parents=True, exist_ok=True)
    if stat.S_ISDIR(info.st_mode):
        target.mkdir()
        target.chmod(stat.S_IMODE(info.st_mode))
    elif stat.S_ISLNK(info.st_mode):
        target.symlink_to(os.readlink(host))
    elif stat.S_ISREG(info.st_mode):
        shutil.copy2(host, target)


def _root_record(path: Path, package_format: Literal["deb", "rpm"], packages: tuple[str, ...]) -> Root:
    release = read_os_release(path)
    return Root(
        path=path,
        os_id=release.get("ID", ""),
        version_id=release.get("VERSION_ID", ""),
        pretty_name=release.get("PRETTY_NAME", ""),
        package_format=package_format,
        packages=packages,
    )


def debian_root(dest: Path, suite: str = "bookworm") -> Root:
    """A real Debian minbase root from debootstrap and the Debian archive (about 30 s, network).

    The downloaded .debs are removed (``apt-get clean``); /etc/fstab mounts / by label.
    """
    debootstrap = need_tool("debootstrap")
    try:
        run([debootstrap, "--variant=minbase", suite, str(dest)], timeout=900)
    except ImageBuildError:
        log = dest / "debootstrap/debootstrap.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise ImageBuildError(f"debootstrap {suite} failed:\n{tail}") from None
    for deb in (dest / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    _skeleton(dest)
    install_file(dest, "/etc/fstab", FSTAB.encode())
    install_file(dest, "/etc/hostname", b"debian-guest\n")
    installed = _parse_status((dest / "var/lib/dpkg/status").read_text())
    return _root_record(dest, "deb", tuple(sorted(installed)))


def copy_root(root: Root, dest: Path) -> Root:
    """A private copy to add programs to: the session's cached roots stay untouched."""
    run([need_tool("cp"), "-a", "--reflink=auto", str(root.path), str(dest)])
    return replace(root, path=dest)


# Rocky Linux 9.4's release files, from its rocky-release package as installed
# (/usr/lib/os-release; the values every 9.4 system prints for `cat /etc/os-release`,
# release 9.4 of 2024-05-09, https://wiki.rockylinux.org/rocky/version/).
ROCKY94_OS_RELEASE = """\
NAME="Rocky Linux"
VERSION="9.4 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"
ANSI_COLOR="0;32"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
HOME_URL="https://rockylinux.org/"
BUG_REPORT_URL="https://bugs.rockylinux.org/"
SUPPORT_END="2032-05-31"
ROCKY_SUPPORT_PRODUCT="Rocky-Linux-9"
ROCKY_SUPPORT_PRODUCT_VERSION="9.4"
REDHAT_SUPPORT_PRODUCT="Rocky Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.4"
"""
ROCKY94_RELEASE = "Rocky Linux release 9.4 (Blue Onyx)\n"

# Programs copied from this machine into the Rocky root, under the Rocky 9 package
# that ships them there; their libraries go to /usr/lib64 under the package that owns
# that soname on Rocky 9 (``rpm -qf /usr/lib64/SONAME``); others under the soname's stem.
ROCKY_PROGRAMS = {"bash": ("/usr/bin/bash",), "coreutils": ("/usr/bin/ls", "/usr/bin/cat", "/usr/bin/sleep")}
_ROCKY_LIBRARY_PACKAGES = {
    "libc.so.6": "glibc", "ld-linux-x86-64.so.2": "glibc", "libm.so.6": "glibc", "libtinfo.so.6": "ncurses-libs",
    "libselinux.so.1": "libselinux", "libpcre2-8.so.0": "pcre2", "libacl.so.1": "libacl", "libattr.so.1": "libattr",
    "libcap.so.2": "libcap", "libgmp.so.10": "gmp",
}  # fmt: skip


def _shared_libraries(program: str) -> dict[str, Path]:
    """soname -> this machine's file, by ldd (this machine's loader resolves them)."""
    out = run([need_tool("ldd"), program]).stdout.decode()
    found: dict[str, Path] = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+)\s+=>\s+(/\S+)", line) or re.match(r"\s*(/\S+/(ld-linux\S+))\s", line)
        if match and "=>" in line:
            found[match.group(1)] = Path(match.group(2))
        elif match:
            found[match.group(2)] = Path(match.group(1))
    return found


def rocky9_root(dest: Path) -> Root:
    """A Rocky Linux 9.4-like root: release files, merged /usr with /usr/lib64, a few of this
    machine's programs and their libraries installed by ``rpm --root`` into a real rpmdb.sqlite."""
    dest.mkdir(parents=True)
    _merged_usr(dest)
    _skeleton(dest)
    files: dict[str, dict[str, bytes]] = {
        "rocky-release": {
            "/usr/lib/os-release": ROCKY94_OS_RELEASE.encode(),
            "/etc/rocky-release": ROCKY94_RELEASE.encode(),
            "/etc/rocky-release-upstream": b"Derived from Red Hat Enterprise Linux 9.4\n",
            "/etc/system-release-cpe": b"cpe:/o:rocky:rocky:9::baseos\n",
        },
        "setup": {
            "/etc/fstab": FSTAB.encode(),
            "/etc/hosts": b"127.0.0.1   localhost\n",
            "/etc/shells": b"/bin/bash\n",
        },
        "glibc": {"/etc/ld.so.conf": b"include ld.so.conf.d/*.conf\n"},
    }
    for package, programs in ROCKY_PROGRAMS.items():
        for program in programs:
            files.setdefault(package, {})[program] = Path(program).read_bytes()
            for soname, library in _shared_libraries(program).items():
                owner = _ROCKY_LIBRARY_PACKAGES.get(soname, soname.split(".so")[0])
                files.setdefault(owner, {})[f"/usr/lib64/{soname}"] = library.read_bytes()
    # names as on Rocky 9; versions are placeholders except the release package's
    noarch = {"rocky-release", "setup"}
    packages = [
        Package(
            name,
            content,
            version="9.4" if name == "rocky-release" else "1.0",
            arch="noarch" if name in noarch else "x86_64",
        )
        for name, content in sorted(files.items())
    ]
    install_packages(dest, packages)
    # links the release package and the filesystem layout ship on Rocky 9
    for link, target in (
        ("/etc/os-release", "../usr/lib/os-release"), ("/etc/redhat-release", "rocky-release"),
        ("/etc/system-release", "rocky-release"), ("/usr/bin/sh", "bash"),
    ):  # fmt: skip
        symlink(dest, link, target)
    install_file(dest, "/etc/hostname", b"rocky-guest\n")
    return _root_record(dest, "rpm", tuple(sorted(files)))
