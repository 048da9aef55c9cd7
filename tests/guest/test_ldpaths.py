"""Library resolution inside a guest, checked against this machine's own dynamic linker.

This machine's root stands in for a guest: search_dirs() reads its ld.so.conf through
the callables, and the answers are compared with ``ldconfig -p`` and ``ldd``. Then a
built program with $ORIGIN paths, and made-up guest trees for the corners.
"""

from __future__ import annotations

import glob as globlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from cpuguard.guest import ldpaths
from cpuguard.guest.errors import GuestDataError
from cpuguard.guest.ldpaths import DEFAULT_DIRS, expand_tokens, resolve, search_dirs
from tests.conftest import need_tool


class Guest:
    """A guest file system rooted at ``root``; records every path asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.asked: list[str] = []

    def host(self, path: str) -> Path:
        assert path.startswith("/"), path
        self.asked.append(path)
        return self.root / path.lstrip("/")

    def read_file(self, path: str) -> bytes | None:
        host = self.host(path)
        return host.read_bytes() if host.is_file() else None

    def glob(self, pattern: str) -> list[str]:
        prefix = str(self.root).rstrip("/")
        return ["/" + p[len(prefix) :].lstrip("/") for p in globlib.glob(str(self.host(pattern)))]

    def exists(self, path: str) -> bool:
        return self.host(path).is_file()


def elf_dynamic(path: str) -> tuple[list[str], list[str], list[str]]:
    """(DT_NEEDED, DT_RPATH, DT_RUNPATH) of an ELF file."""
    needed: list[str] = []
    rpath: list[str] = []
    runpath: list[str] = []
    with open(path, "rb") as stream:
        for section in ELFFile(stream).iter_sections():
            if isinstance(section, DynamicSection):
                for tag in section.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag == "DT_RPATH":
                        rpath.append(tag.rpath)
                    elif tag.entry.d_tag == "DT_RUNPATH":
                        runpath.append(tag.runpath)
    return needed, rpath, runpath


def ldd(path: str) -> dict[str, str]:
    output = subprocess.run([need_tool("ldd"), path], capture_output=True, text=True, timeout=30).stdout
    return dict(re.findall(r"^\s*(\S+) => (/\S+) \(0x", output, re.MULTILINE))


# --- this machine as the guest ---------------------------------------------------------------


@pytest.fixture(scope="module")
def machine_dirs() -> list[str]:
    if not Path("/etc/ld.so.conf").is_file():
        pytest.skip("no /etc/ld.so.conf here")
    return search_dirs(Guest(Path("/")).read_file, Guest(Path("/")).glob)


def test_this_machine_configuration(machine_dirs: list[str]) -> None:
    assert set(DEFAULT_DIRS) <= set(machine_dirs)
    assert len(machine_dirs) == len(set(machine_dirs))
    assert "/usr/local/lib" in machine_dirs  # Debian's libc.conf, through "include /etc/ld.so.conf.d/*.conf"
    assert machine_dirs.index("/usr/local/lib") < machine_dirs.index("/usr/lib/x86_64-linux-gnu")


def test_every_library_of_the_cache_resolves_where_ldconfig_put_it(machine_dirs: list[str]) -> None:
    output = subprocess.run([need_tool("ldconfig"), "-p"], capture_output=True, text=True, timeout=30).stdout
    first: dict[str, str] = {}
    for soname, flags, path in re.findall(r"^\s+(\S+) \(([^)]*)\) => (\S+)$", output, re.MULTILINE):
        if "x86-64" in flags and "hwcap" not in flags:
            first.setdefault(soname, path)
    assert len(first) > 50
    guest = Guest(Path("/"))
    for soname, path in first.items():
        found = resolve(soname, rpath=[], runpath=[], origin="/usr/bin", dirs=machine_dirs, exists=guest.exists)
        assert found is not None, soname
        assert os.path.realpath(found) == os.path.realpath(path), soname


def test_real_programs_resolve_like_ldd(machine_dirs: list[str]) -> None:
    programs = ("/usr/bin/ssh", "/usr/bin/curl", "/usr/bin/python3", "/usr/bin/gpg", "/usr/bin/ls")
    checked = 0
    guest = Guest(Path("/"))
    for program in filter(os.path.exists, programs):
        real = os.path.realpath(program)
        needed, rpath, runpath = elf_dynamic(real)
        expected = ldd(real)
        for name in needed:
            found = resolve(
                name, rpath=rpath, runpath=runpath, origin=os.path.dirname(real), dirs=machine_dirs, exists=guest.exists
            )
            assert found is not None and os.path.realpath(found) == os.path.realpath(expected[name]), (program, name)
            checked += 1
    assert checked >= 5


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """app/bin/{rpath,runpath,plain} needing libowned.so.1 in app/lib, found through $ORIGIN."""
    gcc = need_tool("gcc")
    top = tmp_path_factory.mktemp("app")
    (top / "lib").mkdir()
    (top / "bin").mkdir()
    (top / "owned.c").write_text("int owned(void) { return 42; }\n")
    (top / "main.c").write_text("int owned(void);\nint main(void) { return owned() != 42; }\n")
    lib = top / "lib" / "libowned.so.1"
    subprocess.run([gcc, "-shared", "-fPIC", "-Wl,-soname,libowned.so.1", "-o", lib, top / "owned.c"], check=True)
    (top / "lib" / "libowned.so").symlink_to("libowned.so.1")
    variants = {"rpath": ["-Wl,--disable-new-dtags"], "runpath": ["-Wl,--enable-new-dtags"]}
    for name, flags in variants.items():
        link = [gcc, "-o", top / "bin" / name, top / "main.c", f"-L{top / 'lib'}", "-lowned"]
        subprocess.run([*link, "-Wl,-rpath,$ORIGIN/../lib", *flags], check=True)
    return top


@pytest.mark.parametrize("program", ["rpath", "runpath"])
def test_origin_paths_of_a_built_program(built: Path, program: str, machine_dirs: list[str]) -> None:
    path = built / "bin" / program
    _, rpath, runpath = elf_dynamic(str(path))
    assert (bool(rpath), bool(runpath)) == (program == "rpath", program == "runpath")
    guest = Guest(Path("/"))
    found = resolve(
        "libowned.so.1", rpath=rpath, runpath=runpath, origin=str(path.parent), dirs=machine_dirs, exists=guest.exists
    )
    assert found == f"{built}/bin/../lib/libowned.so.1"
    assert os.path.realpath(found) == os.path.realpath(ldd(str(path))["libowned.so.1"])
    assert subprocess.run([path], timeout=30).returncode == 0


# --- made-up guests ----------------------------------------------------------------------------


def make_guest(tmp_path: Path, files: dict[str, str | bytes]) -> Guest:
    for name, content in files.items():
        target = tmp_path / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        target.write_bytes(content)
    return Guest(tmp_path)


def test_includes_relative_globs_loops_and_junk(tmp_path: Path) -> None:
    guest = make_guest(
        tmp_path,
        {
            "/etc/ld.so.conf": "include ld.so.conf.d/*.conf   # relative to /etc\n/opt/first\n",
            "/etc/ld.so.conf.d/a.conf": (
                "/opt/a/lib/  # trailing slash and comment\n"
                "include /etc/ld.so.conf   # a loop\n"
                "include /etc/more/*.conf /etc/missing/*.conf\n"
                "hwcap 1 nosegneg\n"
                "relative/lib\n"
                "/usr/lib/old=libc6\n"
                "/opt//double//slash\n"
            ),
            "/etc/ld.so.conf.d/b.conf": b"/opt/b\n/opt/\xff\n/opt/with\x00nul\n",
            "/etc/more/c.conf": "/opt/a/lib\n/opt/c\n",
            "/etc/ld.so.conf.d/not-a-conf": "/opt/ignored\n",
        },
    )
    dirs = search_dirs(guest.read_file, guest.glob)
    assert dirs == [
        "/opt/a/lib",
        "/opt/c",
        "/usr/lib/old",
        "/opt/double/slash",
        "/opt/b",
        "/opt/\udcff",
        "/opt/first",
        *DEFAULT_DIRS,
    ]
    assert all(path.startswith("/") for path in guest.asked)


def test_no_configuration(tmp_path: Path) -> None:
    guest = make_guest(tmp_path, {})
    assert search_dirs(guest.read_file, guest.glob) == list(DEFAULT_DIRS)


def test_include_depth_is_bounded(tmp_path: Path) -> None:
    chain = {f"/etc/{i}.conf": f"/opt/{i}\ninclude /etc/{i + 1}.conf\n" for i in range(20)}
    guest = make_guest(tmp_path, {"/etc/ld.so.conf": "include /etc/0.conf\n", **chain})
    dirs = search_dirs(guest.read_file, guest.glob)
    assert dirs[: ldpaths.MAX_INCLUDE_DEPTH] == [f"/opt/{i}" for i in range(ldpaths.MAX_INCLUDE_DEPTH)]
    assert f"/opt/{ldpaths.MAX_INCLUDE_DEPTH}" not in dirs


def test_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = make_guest(tmp_path / "big", {"/etc/ld.so.conf": "#" * (ldpaths.MAX_CONF_BYTES + 1)})
    with pytest.raises(GuestDataError, match=r"/etc/ld\.so\.conf: larger than 1024 KiB"):
        search_dirs(big.read_file, big.glob)
    many = make_guest(tmp_path / "many", {"/etc/ld.so.conf": "".join(f"/opt/{i}\n" for i in range(50))})
    monkeypatch.setattr(ldpaths, "MAX_DIRS", 10)
    with pytest.raises(GuestDataError, match="more than 10 library directories"):
        search_dirs(many.read_file, many.glob)
    files = {f"/etc/d/{i}.conf": "" for i in range(30)}
    wide = make_guest(tmp_path / "wide", {"/etc/ld.so.conf": "include /etc/d/*.conf\n", **files})
    monkeypatch.setattr(ldpaths, "MAX_CONF_FILES", 10)
    with pytest.raises(GuestDataError, match="includes more than 10 files"):
        search_dirs(wide.read_file, wide.glob)


@pytest.fixture
def libs(tmp_path: Path) -> Guest:
    return make_guest(
        tmp_path,
        {
            "/opt/app/bin/app": "",  # $ORIGIN: ld.so opens bin/../lib, so bin must exist
            "/opt/app/lib/libapp.so.1": "",
            "/opt/app/lib64/libarch.so": "",
            "/opt/app/x86_64/libplat.so": "",
            "/opt/rpath/libboth.so": "",
            "/opt/runpath/libboth.so": "",
            "/usr/lib64/libboth.so": "",
            "/usr/lib64/libc.so.6": "",
            "/usr/local/lib/libc.so.6": "",
            "/abs/libexact.so": "",
        },
    )


RESOLVE_CASES: list[tuple[str, dict[str, object], str | None]] = [
    ("libc.so.6", {}, "/usr/lib64/libc.so.6"),
    ("libc.so.6", {"dirs": ["/usr/local/lib", *DEFAULT_DIRS]}, "/usr/local/lib/libc.so.6"),  # ld.so.conf first
    ("libboth.so", {"rpath": ["/opt/rpath"]}, "/opt/rpath/libboth.so"),
    ("libboth.so", {"rpath": ["/opt/rpath"], "runpath": ["/opt/runpath"]}, "/opt/runpath/libboth.so"),
    ("libboth.so", {"rpath": ["/opt/rpath"], "runpath": [""]}, "/usr/lib64/libboth.so"),  # empty RUNPATH: no RPATH
    ("libboth.so", {"rpath": ["/nowhere:/opt/rpath"]}, "/opt/rpath/libboth.so"),  # colon-joined as in the ELF
    ("libapp.so.1", {"runpath": ["$ORIGIN/../lib"]}, "/opt/app/bin/../lib/libapp.so.1"),
    ("libapp.so.1", {"runpath": ["${ORIGIN}/../lib"]}, "/opt/app/bin/../lib/libapp.so.1"),
    ("libapp.so.1", {"runpath": ["$ORIGINAL/../lib"]}, None),  # not a token: a literal, relative path
    ("libarch.so", {"runpath": ["/opt/app/$LIB"]}, "/opt/app/lib64/libarch.so"),
    ("libarch.so", {"runpath": ["/opt/app/$LIB"], "lib": "lib/x86_64-linux-gnu"}, None),
    ("libplat.so", {"runpath": ["/opt/app/${PLATFORM}"]}, "/opt/app/x86_64/libplat.so"),
    ("libapp.so.1", {"runpath": ["$ORIGIN/../lib"], "origin": "relative/bin"}, None),
    ("libapp.so.1", {"runpath": ["lib", ""]}, None),  # the working directory: unknowable
    ("/abs/libexact.so", {}, "/abs/libexact.so"),
    ("/abs/missing.so", {}, None),
    ("../lib/libapp.so.1", {}, None),  # relative to the working directory
    ("$ORIGIN/../lib/libapp.so.1", {}, "/opt/app/bin/../lib/libapp.so.1"),  # tokens in DT_NEEDED too
    ("libmissing.so", {}, None),
    ("", {}, None),
    ("lib\x00c.so.6", {}, None),
    ("x" * 5000, {}, None),
]


@pytest.mark.parametrize(("name", "options", "expected"), RESOLVE_CASES)
def test_resolve(libs: Guest, name: str, options: dict[str, object], expected: str | None) -> None:
    arguments: dict[str, object] = {"rpath": [], "runpath": [], "origin": "/opt/app/bin", "dirs": list(DEFAULT_DIRS)}
    arguments.update(options)
    assert resolve(name, exists=libs.exists, **arguments) == expected  # type: ignore[arg-type]


def test_resolve_asks_only_guest_paths(libs: Guest) -> None:
    for name, options, _ in RESOLVE_CASES:
        arguments: dict[str, object] = {"rpath": [], "runpath": [], "origin": "/opt/app/bin", "dirs": DEFAULT_DIRS}
        arguments.update(options)
        resolve(name, exists=libs.exists, **arguments)  # type: ignore[arg-type]
    assert libs.asked and all(path.startswith("/") for path in libs.asked)


def test_hostile_rpath_is_bounded(libs: Guest) -> None:
    with pytest.raises(GuestDataError, match="DT_RUNPATH has more than 1,024 entries"):
        resolve("libc.so.6", rpath=[], runpath=[":" * 2000], origin="/", dirs=[], exists=libs.exists)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$ORIGIN/x", "/o/x"),
        ("${ORIGIN}x", "/ox"),
        ("$ORIGINx", "$ORIGINx"),
        ("/a/$LIB/$PLATFORM", "/a/lib64/x86_64"),
        ("$$ORIGIN", "$/o"),
        ("${LIB", "${LIB"),
    ],
)
def test_expand_tokens(text: str, expected: str) -> None:
    assert expand_tokens(text, origin="/o") == expected


def test_callables_are_the_only_way_in() -> None:
    calls: list[str] = []

    def recorder(result: object) -> Callable[[str], object]:
        def call(path: str) -> object:
            calls.append(path)
            return result

        return call

    dirs = search_dirs(recorder(b"include /x/*.conf\n/opt/lib\n"), recorder([]))  # type: ignore[arg-type]
    assert dirs == ["/opt/lib", *DEFAULT_DIRS]
    assert calls == ["/etc/ld.so.conf", "/x/*.conf"]
