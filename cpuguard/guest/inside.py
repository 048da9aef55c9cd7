"""Choose and copy out the workload's files of one guest whose root is mounted in the appliance.

Runs in the worker process (:mod:`cpuguard.guest.worker`), on a libguestfs
handle whose file systems are mounted read-only. Every path is the guest's:
libguestfs resolves names inside the guest's own tree (its daemon works
below the mounted root), so a guest symlink to ``/etc/shadow`` means the
guest's file, never the host's.

What is chosen, and why (each file says which rule chose it):

* files owned by no installed package (dpkg's ``info/*.list``, the RPM
  database) in executable places: the custom builds;
* the executables of enabled systemd units (``/etc/systemd/system/*.wants``
  and ``*.requires`` links, their ``ExecStart=`` lines);
* the ``DT_NEEDED`` closure of everything chosen, resolved with the guest's
  own ``ld.so.conf``, RPATH and RUNPATH;
* with ``all_files``, every executable or shared object in those places.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cpuguard.guest import dpkg, ldpaths, rpmdb, units
from cpuguard.guest.errors import GuestDataError, one_line
from cpuguard.guest.tree import GuestTree, read_pieces

#: Where programs and libraries live. /usr/local, /opt and /srv hold custom builds;
#: the rest is where a package manager puts things, and where people copy builds too.
EXEC_PLACES = (
    "/usr/local",
    "/opt",
    "/srv",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/usr/libexec",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
)
#: Places read when the guest has no package database cpuguard can read.
LOCAL_PLACES = ("/usr/local", "/opt", "/srv")
UNIT_DIRS = (
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
RPM_DATABASES = ("/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite")
RPM_BERKELEY = ("/var/lib/rpm/Packages", "/usr/lib/sysimage/rpm/Packages")

MAX_WALK_ENTRIES = 400_000  # names looked at in executable places, per guest
MAX_CHOSEN = 5_000  # files copied out, per guest
MAX_FILE_BYTES = 512 * 1024 * 1024  # larger files are not copied
MAX_DB_BYTES = 1024 * 1024 * 1024  # an RPM database copied out
MAX_CLOSURE_ROUNDS = 16
MIN_ELF_BYTES = 64
#: Bytes one pread asks for: below the 2-4 MB one libguestfs message carries ("PROTOCOL LIMITS", guestfs(3)).


@dataclass
class Chosen:
    path: str
    reason: str
    staged: str = ""
    problem: str = ""


@dataclass
class Selection:
    chosen: dict[str, Chosen] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, path: str, reason: str) -> bool:
        if path in self.chosen:
            known = self.chosen[path]
            if reason not in known.reason.split("; ") and len(known.reason) < 1000:
                known.reason = f"{known.reason}; {reason}"  # every rule that chose it, in order
            return False
        if len(self.chosen) >= MAX_CHOSEN:
            if len(self.chosen) == MAX_CHOSEN:
                self.problems.append(f"more than {MAX_CHOSEN} files chosen: the rest were not scanned")
                self.chosen[""] = Chosen("", "")  # marks the limit once
            return False
        self.chosen[path] = Chosen(path, reason)
        return True


def _error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return one_line(text.split("\n")[0])


class Inside(GuestTree):
    """One mounted guest tree in the appliance: what to choose in it."""

    def __init__(self, g: Any, staging: str, *, all_files: bool = False) -> None:
        super().__init__(g)
        self.staging = staging
        self.all_files = all_files
        self.selection = Selection()
        self.package_arches: frozenset[str] = frozenset()  # of RPM packages: x86_64, x86_64_v2...

    # -- package ownership ------------------------------------------------------------------

    def owned(self) -> frozenset[str] | None:
        """Every path an installed package owns, merged-/usr aliases mapped; None when unknown."""
        lists_dir = "/var/lib/dpkg/info"
        if self.is_real_dir(lists_dir):
            try:
                names = [n for n in self.g.ls(lists_dir) if n.endswith(".list")]
            except RuntimeError as exc:
                self.selection.problems.append(f"cannot list dpkg's database: {_error(exc)}")
                return None
            lists = []
            for name in names:
                data = self.read_small(f"{lists_dir}/{name}", dpkg.MAX_LIST_BYTES)
                if data is not None:
                    lists.append((name, data))
            diversions = self.read_small("/var/lib/dpkg/diversions") or b""
            try:
                # a local diversion means the administrator replaced the package's file: not owned
                owned = (dpkg.owned_paths(lists) | dpkg.diverted_paths(diversions)) - dpkg.local_diversions(diversions)
            except GuestDataError as exc:
                self.selection.problems.append(f"dpkg's database: {exc}")
                return None
            self.selection.notes.append(f"package ownership from dpkg ({len(lists)} packages)")
            return frozenset(dpkg.canonical(p, self.root_links) for p in owned)
        for database in RPM_DATABASES:
            if self.is_file(database):
                return self._rpm_owned(database)
        if any(self.is_file(p) for p in RPM_BERKELEY):
            self.selection.problems.append(
                "RPM database in Berkeley DB format (RHEL 8 and older): package ownership unknown, "
                f"only {', '.join(LOCAL_PLACES)} were searched"
            )
            return None
        self.selection.notes.append(
            f"no package database found: only {', '.join(LOCAL_PLACES)} were searched for programs"
        )
        return None

    def _rpm_owned(self, database: str) -> frozenset[str] | None:
        try:
            if self.g.filesize(database) > MAX_DB_BYTES:
                self.selection.problems.append(f"RPM database {database} is larger than {MAX_DB_BYTES} bytes")
                return None
            local = os.path.join(self.staging, "rpmdb.sqlite")
            self.g.download(database, local)
        except RuntimeError as exc:
            self.selection.problems.append(f"cannot read the RPM database {database}: {_error(exc)}")
            return None
        try:
            owned = rpmdb.owned_paths(_path(local))
            self.package_arches = rpmdb.package_arches(_path(local))
        except GuestDataError as exc:
            self.selection.problems.append(f"RPM database {database}: {exc}")
            return None
        finally:
            _remove(local)
        self.selection.notes.append(f"package ownership from the RPM database {database}")
        return frozenset(dpkg.canonical(p, self.root_links) for p in owned)

    # -- choosing files ---------------------------------------------------------------------

    def walk(self, place: str) -> Iterable[tuple[str, int, int]]:
        """(path, mode, size) of the entries below ``place`` (symlinks not followed)."""
        listing = os.path.join(self.staging, "find0")
        try:
            self.g.find0(place, listing)
            with open(listing, "rb") as handle:
                raw = handle.read()
        except (RuntimeError, OSError) as exc:
            self.selection.problems.append(f"cannot list {place}: {_error(exc)}")
            return
        finally:
            _remove(listing)
        names = [n.decode("utf-8", "surrogateescape") for n in raw.split(b"\0") if n]
        if len(names) > MAX_WALK_ENTRIES:
            self.selection.problems.append(f"{place} holds more than {MAX_WALK_ENTRIES} entries: the rest not searched")
            names = names[:MAX_WALK_ENTRIES]
        by_dir: dict[str, list[str]] = {}
        for name in names:
            full = posixpath.join(place, name.lstrip("/"))  # find0 names start with "/"
            by_dir.setdefault(posixpath.dirname(full), []).append(posixpath.basename(full))
        for directory, entries in by_dir.items():
            for start in range(0, len(entries), 1000):
                chunk = entries[start : start + 1000]
                usable = [entry for entry in chunk if _encodable(posixpath.join(directory, entry))]
                for entry in chunk:
                    if entry not in usable:
                        self.selection.problems.append(
                            f"{one_line(posixpath.join(directory, entry))}: a file name that is not UTF-8 "
                            "cannot be read through libguestfs: not scanned"
                        )
                try:
                    stats = self.g.lstatnslist(directory, usable) if usable else []
                except RuntimeError:
                    continue
                chunk = usable
                for entry, info in zip(chunk, stats, strict=False):
                    yield posixpath.join(directory, entry), int(info["st_mode"]), int(info["st_size"])

    def choose_unowned(self, owned: frozenset[str] | None) -> None:
        places = EXEC_PLACES if owned is not None else LOCAL_PLACES
        searched = set()
        for place in places:
            if place in self.root_links or not self.is_real_dir(place):
                continue  # /bin -> usr/bin is searched as /usr/bin
            searched.add(place)
            for path, mode, size in self.walk(place):
                if not stat.S_ISREG(mode) or size < MIN_ELF_BYTES:
                    continue
                base = posixpath.basename(path)
                if not (mode & 0o111 or ".so" in base):
                    continue
                if owned is not None and path in owned:
                    if self.all_files:
                        self.selection.add(path, "package-owned file (--all-files)")
                    continue
                self.selection.add(path, "owned by no package")

    def choose_units(self) -> None:
        base = "/etc/systemd/system"
        if not self.is_real_dir(base):
            return
        try:
            entries = sorted(self.g.ls(base))
        except RuntimeError:
            return
        for directory in entries:
            if not (directory.endswith(".wants") or directory.endswith(".requires")):
                continue
            wants = f"{base}/{directory}"
            if not self.is_real_dir(wants):
                continue
            try:
                names = sorted(self.g.ls(wants))
            except RuntimeError:
                continue
            for name in names:
                if name.endswith(".service"):
                    self._choose_unit(f"{wants}/{name}", name)

    def _unit_file(self, link: str, name: str) -> str | None:
        real = self.realpath(link)
        if real is not None and self.is_file(real):
            return real
        template = name
        if "@" in name:
            prefix, _, suffix = name.partition("@")
            template = f"{prefix}@.{suffix.rpartition('.')[2]}"
        for directory in UNIT_DIRS:
            for candidate in (name, template):
                if self.is_file(f"{directory}/{candidate}"):
                    return self.realpath(f"{directory}/{candidate}")
        return None

    def _choose_unit(self, link: str, name: str) -> None:
        unit = self._unit_file(link, name)
        if unit is None:
            self.selection.notes.append(f"enabled unit {one_line(name)}: unit file not found")
            return
        text = self.read_small(unit)
        if text is None:
            return
        try:
            commands = units.exec_commands(text.decode("utf-8", "replace"))
        except GuestDataError as exc:
            self.selection.notes.append(f"enabled unit {one_line(name)}: {exc}")
            return
        for command in commands:
            path = command.path if command.absolute else self._on_path(command.path)
            if path is None:
                self.selection.notes.append(f"enabled unit {one_line(name)}: {one_line(command.path)} not found")
                continue
            real = self.realpath(path)
            if real is None:
                self.selection.notes.append(
                    f"enabled unit {one_line(name)}: {one_line(path)} cannot be resolved in the guest"
                )
                continue
            self.selection.add(real, f"run by enabled unit {one_line(name)} (line {command.line})")

    def _on_path(self, name: str) -> str | None:
        for directory in PATH_DIRS:
            if self.is_file(f"{directory}/{name}"):
                return f"{directory}/{name}"
        return None

    # -- copying out and the DT_NEEDED closure -------------------------------------------------

    def stage(self, chosen: Chosen) -> None:
        """Copy one chosen file into the private staging tree, under its guest path."""
        destination = os.path.normpath(os.path.join(self.staging, "root", chosen.path.lstrip("/")))
        if not destination.startswith(os.path.join(self.staging, "root") + os.sep):
            chosen.problem = "unusable path"
            return
        try:
            info = self.g.lstatns(chosen.path)
            if not stat.S_ISREG(info["st_mode"]):
                chosen.problem = "not a regular file"
                return
            size = int(info["st_size"])
            if size > MAX_FILE_BYTES:
                chosen.problem = f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, not copied"
                return
            os.makedirs(os.path.dirname(destination), mode=0o700, exist_ok=True)
            with open(destination, "wb") as out:
                for piece in read_pieces(self.g, chosen.path, size):
                    out.write(piece)
        except (RuntimeError, OSError) as exc:
            chosen.problem = f"cannot be read: {_error(exc)}"
            return
        chosen.staged = destination

    def close_over_needed(self, elf_links: Callable[[str], tuple[list[str], list[str]] | None]) -> None:
        """Stage every chosen file, then add the libraries they load until nothing new comes."""
        dirs = ldpaths.search_dirs(lambda p: self.read_small(p), self.glob)
        done: set[str] = set()
        for _round in range(MAX_CLOSURE_ROUNDS):
            pending = [c for path, c in self.selection.chosen.items() if path and path not in done]
            if not pending:
                return
            for chosen in pending:
                done.add(chosen.path)
                self.stage(chosen)
                links = elf_links(chosen.staged) if chosen.staged else None
                if links is None:
                    continue
                needed, paths = links
                for library in needed:
                    found = ldpaths.resolve(
                        library,
                        rpath=(),
                        runpath=paths,
                        origin=posixpath.dirname(chosen.path),
                        dirs=dirs,
                        exists=self.is_file,
                    )
                    real = self.realpath(found) if found else None
                    if real is None:
                        continue
                    self.selection.add(real, f"library of {chosen.path} (DT_NEEDED {library})")
        self.selection.problems.append("library closure did not settle: the deepest libraries were not scanned")


def _encodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\0" not in name


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _path(text: str) -> Any:
    from pathlib import Path

    return Path(text)
