"""Where a guest's dynamic linker finds a program's libraries, worked out from the host.

References: ld.so(8), "DESCRIPTION" (the search order for a DT_NEEDED name: a name
with a slash is a path; otherwise DT_RPATH when there is no DT_RUNPATH, then
LD_LIBRARY_PATH, DT_RUNPATH, the ld.so.cache, and the default directories) and
"Dynamic string tokens" ($ORIGIN, $LIB, $PLATFORM, also as ${...}, expanded in
DT_NEEDED, DT_RPATH and DT_RUNPATH); ldconfig(8), "FILES" (/etc/ld.so.conf: a
list of directories, one per line) with glibc's ``include`` lines, whose
relative patterns are taken from the including file's directory.

The guest is reached only through the callables passed in (read a file, expand a
glob, test for a file), which the inspection engine answers from inside the
guest's file system; nothing here looks at the host. LD_LIBRARY_PATH is a
property of a process, not of the disk, and is not modelled. The ld.so.cache is
modelled by the directories it is built from, in ld.so.conf order. Libraries in
``glibc-hwcaps/`` subdirectories are left out on purpose: glibc loads them only
on CPUs that have their level, so the plain one is what a smaller CPU runs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Sequence

from cpuguard.guest.errors import GuestDataError

ReadFile = Callable[[str], bytes | None]
Glob = Callable[[str], list[str]]
Exists = Callable[[str], bool]

LD_SO_CONF = "/etc/ld.so.conf"

#: The default directories of x86_64 glibc builds, searched after the cache: Debian's and
#: Ubuntu's multiarch pair, the lib64 pair of RHEL and SUSE (ldconfig(8): "on x86-64 ...
#: /lib64 and /usr/lib64 are used for 64-bit libraries"), then ld.so(8)'s /lib and /usr/lib.
DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")

#: $LIB on x86_64 (ld.so(8)); Debian's glibc says ``lib/x86_64-linux-gnu`` instead.
LIB_X86_64 = "lib64"
LIB_DEBIAN_X86_64 = "lib/x86_64-linux-gnu"
#: $PLATFORM: the kernel's AT_PLATFORM on x86_64.
PLATFORM_X86_64 = "x86_64"

#: Deepest chain of ``include`` lines followed.
MAX_INCLUDE_DEPTH = 8
#: Most configuration files read (real systems have a few dozen).
MAX_CONF_FILES = 512
#: Largest configuration file read.
MAX_CONF_BYTES = 1024 * 1024
#: Most directories taken from the configuration.
MAX_DIRS = 4096
#: Most entries of a DT_RPATH or DT_RUNPATH.
MAX_PATH_ENTRIES = 1024
#: Longest name or path considered (Linux's PATH_MAX).
MAX_PATH_CHARS = 4096

_TOKEN = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")
_TYPE_SUFFIX = re.compile(r"=[A-Za-z0-9_]+$")  # libc5-era "dir=libc6"


def _lines(data: bytes) -> Iterable[str]:
    for raw in data.decode("utf-8", "surrogateescape").split("\n"):
        line = raw.partition("#")[0].strip()
        if line and "\x00" not in line:
            yield line


def _clean_dir(text: str) -> str | None:
    text = _TYPE_SUFFIX.sub("", text)
    if not text.startswith("/") or len(text) > MAX_PATH_CHARS:
        return None  # ldconfig takes a relative one from its own working directory: meaningless here
    return "/" + "/".join(part for part in text.split("/") if part)


def search_dirs(read_file: ReadFile, glob: Glob, *, conf: str = LD_SO_CONF) -> list[str]:
    """The library directories of the guest's ld.so.conf (``include`` lines followed, each
    file once, to :data:`MAX_INCLUDE_DEPTH`), then :data:`DEFAULT_DIRS`, without repeats.

    ``read_file(path)`` returns a guest file's bytes or None when it is missing;
    ``glob(pattern)`` expands a pattern inside the guest. Too many files or
    directories, or a file too large, raise :class:`GuestDataError`.
    """
    found: list[str] = []
    seen_dirs: set[str] = set()
    read: set[str] = set()

    def add(directory: str) -> None:
        if directory not in seen_dirs:
            if len(found) >= MAX_DIRS:
                raise GuestDataError(f"{conf}: more than {MAX_DIRS:,} library directories")
            seen_dirs.add(directory)
            found.append(directory)

    def parse(path: str, depth: int) -> None:
        if path in read:
            return  # included twice, or in a loop
        if len(read) >= MAX_CONF_FILES:
            raise GuestDataError(f"{conf}: includes more than {MAX_CONF_FILES:,} files")
        read.add(path)
        data = read_file(path)
        if data is None:
            return
        if len(data) > MAX_CONF_BYTES:
            raise GuestDataError(f"{path}: larger than {MAX_CONF_BYTES // 1024} KiB")
        for line in _lines(data):
            words = line.split()
            if words[0] == "include":
                if depth >= MAX_INCLUDE_DEPTH:
                    continue
                for pattern in words[1:]:
                    if not pattern.startswith("/"):
                        pattern = posixpath.join(posixpath.dirname(path), pattern)
                    for included in sorted(glob(pattern)):
                        parse(included, depth + 1)
            elif words[0] == "hwcap":
                continue  # obsolete hardware-capability lines
            elif (directory := _clean_dir(line)) is not None:
                add(directory)

    parse(conf, 0)
    for directory in DEFAULT_DIRS:
        add(directory)
    return found


def expand_tokens(text: str, *, origin: str, lib: str = LIB_X86_64, platform: str = PLATFORM_X86_64) -> str | None:
    """``text`` with $ORIGIN, $LIB and $PLATFORM (or ${...}) replaced, or None when it
    uses $ORIGIN and ``origin`` (the directory of the object) is not absolute."""
    values = {"ORIGIN": origin, "LIB": lib, "PLATFORM": platform}
    names = [match.group(1) or match.group(2) for match in _TOKEN.finditer(text)]
    if "ORIGIN" in names and not origin.startswith("/"):
        return None
    return _TOKEN.sub(lambda match: values[match.group(1) or match.group(2)], text)


def _entries(paths: Sequence[str], what: str) -> list[str]:
    entries = [entry for path in paths for entry in path.split(":")]
    if len(entries) > MAX_PATH_ENTRIES:
        raise GuestDataError(f"{what} has more than {MAX_PATH_ENTRIES:,} entries")
    return entries


def _join(directory: str, name: str) -> str:
    # the path ld.so opens: ".." is left for the guest's own file system to resolve
    return re.sub(r"/{2,}", "/", f"{directory.rstrip('/')}/{name}")


def resolve(
    name: str,
    *,
    rpath: Sequence[str],
    runpath: Sequence[str],
    origin: str,
    dirs: Sequence[str],
    exists: Exists,
    lib: str = LIB_X86_64,
    platform: str = PLATFORM_X86_64,
) -> str | None:
    """The guest path ld.so(8) would load for the DT_NEEDED ``name``, or None.

    ``rpath`` is the object's DT_RPATH followed by those of the objects that loaded it
    (it applies only when ``runpath``, the object's own DT_RUNPATH, is absent: an empty
    sequence; an empty DT_RUNPATH string is ``[""]``); entries
    may be given colon-joined as in the ELF string. ``origin`` is the object's directory,
    ``dirs`` the :func:`search_dirs` result, ``exists(path)`` tells whether a regular file
    is there inside the guest. A name holding a slash is taken as a path; a relative one
    (relative to the process's working directory) is refused, as are rpath entries that
    are empty or relative for the same reason.
    """
    if not name or len(name) > MAX_PATH_CHARS or "\x00" in name:
        return None
    expanded = expand_tokens(name, origin=origin, lib=lib, platform=platform)
    if expanded is None:
        return None
    if "/" in expanded:
        return expanded if expanded.startswith("/") and exists(expanded) else None
    rpaths = _entries(rpath, "DT_RPATH")
    runpaths = _entries(runpath, "DT_RUNPATH")
    # a DT_RUNPATH tag, even an empty one, switches DT_RPATH off
    searched = [*([] if runpath else rpaths), *runpaths, *dirs]
    for entry in searched:
        directory = expand_tokens(entry, origin=origin, lib=lib, platform=platform)
        if not directory or not directory.startswith("/") or len(directory) > MAX_PATH_CHARS:
            continue
        candidate = _join(directory, expanded)
        if exists(candidate):
            return candidate
    return None
