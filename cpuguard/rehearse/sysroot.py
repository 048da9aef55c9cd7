"""The throwaway sysroot of a rehearsal: a program, its libraries and its loader, nothing else.

The closure is worked out as the guest's dynamic linker would (``DT_NEEDED``
names, RUNPATH/RPATH, the guest's ld.so.conf and default directories:
:mod:`cpuguard.guest.ldpaths`), with every path resolved inside the guest's
root (:class:`GuestRoot`). Each file is copied to the path the loader opens,
readable by anyone (the sandbox runs as nobody). Libraries a program opens
with ``dlopen`` are not in the closure: name them with the command's files.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cpuguard.errors import BadInput
from cpuguard.guest.ldpaths import DEFAULT_DIRS, resolve, search_dirs
from cpuguard.rehearse.guestroot import GuestRoot
from cpuguard.scan import elf

#: Where a bare command name is looked up inside the guest (a login shell's PATH).
GUEST_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
#: Most files of one closure (a large Asterisk has a few hundred).
MAX_FILES = 4096
#: Files copied along when the guest has them: the loader's cache of library paths.
EXTRAS = ("/etc/ld.so.cache",)


@dataclass
class Closure:
    """Guest paths to copy (the path opened -> the guest path of the file that is read)."""

    program: str
    interpreter: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # "NAME (needed by PATH)"
    conf_dirs: list[str] = field(default_factory=list)  # the guest's ld.so.conf directories

    def library_path(self) -> str:
        """LD_LIBRARY_PATH for the guest's loader: its ld.so.conf directories that hold a copied
        library (the sysroot has no ld.so.cache built for it; the guest's own may be missing or stale)."""
        used = {posixpath.dirname(path) for path in self.files}
        return ":".join(d for d in self.conf_dirs if d in used)


def find_program(root: GuestRoot, name: str) -> str:
    """The guest path of the command ``name`` (a path, or a name looked up in :data:`GUEST_PATH`)."""
    candidates = [name] if "/" in name else [f"{d}/{name}" for d in GUEST_PATH]
    for candidate in candidates:
        if candidate.startswith("/") and root.exists(candidate):
            return candidate
    raise BadInput(name, "no such program in the guest's root" + ("" if "/" in name else " (looked in its PATH)"))


def _open(root: GuestRoot, path: str) -> elf.ElfFile:
    host = root.host_path(path)
    if host is None:
        raise BadInput(path, "not a regular file in the guest's root")
    data = host.read_bytes()
    if data.startswith(b"#!"):
        interpreter = data[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        raise BadInput(path, f"a script ({interpreter}): name its interpreter first (-- {interpreter} {path})")
    try:
        return elf.ElfFile(elf.BytesSource(data))
    except elf.ElfError as exc:
        raise BadInput(path, str(exc)) from None


def interpreter_of(image: elf.ElfFile) -> str | None:
    """The PT_INTERP path (the loader the kernel starts), None for a static program."""
    for segment in image.segments:
        if segment.type == elf.PT_INTERP:
            raw = image.bytes_at(segment.offset, segment.filesz, "PT_INTERP")
            return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape") or None
    return None


def closure(root: GuestRoot, program: str, extra: Sequence[str] = (), *, extras: bool = True) -> Closure:
    """The program, ``extra`` guest files, their loader and the libraries they need, transitively
    (and, with ``extras``, the files of :data:`EXTRAS` the guest has)."""
    result = Closure(program)
    image = _open(root, program)
    result.interpreter = interpreter_of(image)
    dirs = search_dirs(root.read_file, root.glob)
    result.conf_dirs = [d for d in dirs if d not in DEFAULT_DIRS]
    queue = [program, *extra]
    if result.interpreter:
        queue.append(result.interpreter)
    while queue:
        path = queue.pop(0)
        if path in result.files:
            continue
        if len(result.files) >= MAX_FILES:
            raise BadInput(program, f"needs more than {MAX_FILES:,} files")
        resolved = root.resolve(path)
        if resolved is None or not root.exists(path):
            result.missing.append(path)
            continue
        result.files[path] = resolved
        try:
            needed, paths = _open(root, path).dynamic_strings()
        except BadInput:
            continue  # not ELF (a data file named along): copied, not followed
        origin = posixpath.dirname(resolved)
        for name in needed:
            found = resolve(name, rpath=(), runpath=paths, origin=origin, dirs=dirs, exists=root.exists)
            if found is None:
                result.missing.append(f"{name} (needed by {path})")
            else:
                queue.append(found)
    for path in EXTRAS if extras else ():
        if root.exists(path):
            result.files.setdefault(path, root.resolve(path) or path)
    return result


def build(root: GuestRoot, found: Closure, target: Path) -> None:
    """Copy ``found`` into the empty directory ``target``, world-readable."""
    for opened, real in sorted(found.files.items()):
        source = root.host_path(real)
        if source is None:
            continue
        destination = target / opened.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination, follow_symlinks=False)
        os.chmod(destination, 0o755)  # noqa: S103 - the sandbox runs as nobody
    for directory, _, _ in os.walk(target):
        os.chmod(directory, 0o755)  # noqa: S103


#: Where files made for a rehearsal may go (beside qemu-user, never over a guest file).
GENERATED_DIR = "/.cpuguard/workload/"


def write_generated(target: Path, files: Sequence[tuple[str, str]]) -> None:
    """Write the files made for the rehearsal (a workload default's configuration) into the sysroot."""
    for path, text in files:
        clean = posixpath.normpath(path)
        if not clean.startswith(GENERATED_DIR):
            raise ValueError(f"a generated file must lie under {GENERATED_DIR}: {path}")
        destination = target / clean.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(text, encoding="utf-8")
        os.chmod(destination, 0o644)
    for directory, _, _ in os.walk(target / GENERATED_DIR.strip("/")):
        os.chmod(directory, 0o755)  # noqa: S103
