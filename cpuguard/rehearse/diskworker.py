"""Copy what a rehearsal needs out of a VM's disks: ``python -m cpuguard.rehearse.diskworker``.

Runs like the guest inspection's worker (:mod:`cpuguard.guest.worker`): one JSON
job on stdin, JSON lines on stdout, in its own process so the caller bounds its
time and a misbehaving appliance stays away from the caller. The disks are
opened read-only in a libguestfs appliance, the guest's root is mounted
read-only, and a :class:`MirrorRoot` copies into a private staging directory
every directory, symlink and file the rehearsal's own code reads while it works
out the program, its closure and its loader. The caller then rehearses on that
partial copy of the guest's root exactly as on an extracted one.

Job::

    {"staging": DIR, "guest": {"vm": "pbx01", "disks": [{"target": "vda", "path": ..., "format": ...}]},
     "commands": [["/usr/sbin/pbxd", "--check"]], "files": ["/etc/pbxd.conf"], "defaults": false}

Events: ``{"event": "launched"}``, ``{"event": "done", "result": {"problems": [...]}}``
or ``{"event": "failed", "problem": "..."}``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.guest.errors import one_line
from cpuguard.guest.inside import MAX_FILE_BYTES
from cpuguard.guest.tree import read_pieces
from cpuguard.guest.worker import Appliance, _emit, _mount, _no_os, import_guestfs
from cpuguard.rehearse import sysroot
from cpuguard.rehearse.guestroot import GuestRoot, kind_of_mode


class MirrorRoot(GuestRoot):
    """A guest tree mounted in the appliance (libguestfs handle ``g``), copied into ``local``
    on demand: each path component the walk asks about is mirrored (a directory made, a
    symlink recreated with the guest's own target), a regular file copied when it is read.
    Only what was asked for is there, and it reads back exactly as the guest has it."""

    def __init__(self, g: Any, local: Path) -> None:
        super().__init__(local)
        self.g = g
        self.kinds: dict[str, str | None] = {}
        self.sizes: dict[str, int] = {}
        self.copied: set[str] = set()
        self.problems: list[str] = []

    def _kind(self, path: str) -> str | None:
        if path in self.kinds:
            return self.kinds[path]
        kind: str | None
        try:
            info = self.g.lstatns(path)
            kind = kind_of_mode(int(info["st_mode"]))
            local = self.root / path.lstrip("/")
            if kind == "dir":
                local.mkdir(mode=0o700, exist_ok=True)
            elif kind == "link":
                target = str(self.g.readlink(path))
                if not os.path.lexists(local):
                    os.symlink(target, local)
            elif kind == "file":
                self.sizes[path] = int(info["st_size"])
        except (RuntimeError, OSError):
            kind = None
        self.kinds[path] = kind
        return kind

    def host_path(self, path: str) -> Path | None:
        resolved = self.resolve(path)
        if resolved is not None and self.kinds.get(resolved) == "file" and resolved not in self.copied:
            self.copied.add(resolved)
            self._copy(resolved)
        return super().host_path(path)

    def _copy(self, path: str) -> None:
        size = self.sizes.get(path, 0)
        if size > MAX_FILE_BYTES:
            self.problems.append(f"{one_line(path)}: larger than {MAX_FILE_BYTES // 2**20} MiB, not copied")
            return
        local = self.root / path.lstrip("/")
        try:
            with open(local, "xb") as out:
                for piece in read_pieces(self.g, path, size):
                    out.write(piece)
        except (RuntimeError, OSError) as exc:
            local.unlink(missing_ok=True)
            self.problems.append(f"{one_line(path)}: cannot be read: {one_line(str(exc))}")

    def glob(self, pattern: str) -> list[str]:
        directory = self.resolve(os.path.dirname(pattern) or "/")
        if directory is None:
            return []
        try:
            names = self.g.glob_expand(os.path.join(directory, os.path.basename(pattern)))
        except RuntimeError:
            names = []
        for name in names:
            self.host_path(str(name))
        return super().glob(pattern)


def gather(root: GuestRoot, commands: Sequence[Sequence[str]], files: Sequence[str]) -> list[str]:
    """Read, in ``root``, everything rehearsing ``commands`` reads: each program, the absolute
    paths among its arguments, ``files``, their closure and loader. What cannot be found is
    only noted here; the rehearsal itself says it, on the copy."""
    problems = []
    for argv in commands:
        try:
            program = sysroot.find_program(root, argv[0])
            named = [arg for arg in argv[1:] if arg.startswith("/") and root.exists(arg)]
            sysroot.closure(root, program, [*files, *named])
        except BadInput as exc:
            problems.append(str(exc))
    return problems


def run(job: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> int:
    guestfs = import_guestfs()
    if guestfs is None:
        emit({"event": "failed", "problem": "libguestfs is not installed (Debian package python3-guestfs)"})
        return 0
    guest = job["guest"]
    vm = str(guest["vm"])
    try:
        appliance = Appliance(guestfs, [guest])
        emit({"event": "launched"})
        appliance.assign_roots()
    except RuntimeError as exc:
        emit({"event": "failed", "problem": f"the inspection appliance could not open the disks: {one_line(str(exc))}"})
        return 0
    g = appliance.g
    roots = appliance.roots.get(vm, [])
    linux = [root for root in roots if g.inspect_get_type(root) == "linux"]
    if not linux:
        kind = g.inspect_get_type(roots[0]) if roots else ""
        problem = f"{kind} guest: cpuguard rehearses Linux programs" if roots else _no_os(appliance, vm)
        emit({"event": "failed", "problem": problem})
        return 0
    try:
        problems = _mount(appliance, vm, linux[0])
    except RuntimeError as exc:
        emit({"event": "failed", "problem": f"the guest's root file system could not be mounted: {one_line(str(exc))}"})
        return 0
    mirror = MirrorRoot(g, Path(job["staging"]))
    commands = [list(map(str, argv)) for argv in job.get("commands", [])]
    files = [str(f) for f in job.get("files", [])]
    if job.get("defaults"):
        from cpuguard.rehearse.workloads import default_entries

        for entry in default_entries(mirror):
            commands.append(list(entry.argv))
            files.extend(entry.files)
    problems += gather(mirror, commands, files)
    problems += mirror.problems
    if len(linux) > 1:
        first = appliance.guest_name(linux[0])
        problems.append(f"{len(linux)} Linux installations found; the first ({first}) was read")
    emit({"event": "done", "result": {"problems": [one_line(p) for p in problems]}})
    try:
        g.umount_all()
        g.shutdown()
        g.close()
    except RuntimeError:
        pass
    return 0


def main() -> int:
    return run(json.loads(sys.stdin.read()), _emit)


if __name__ == "__main__":
    raise SystemExit(main())
