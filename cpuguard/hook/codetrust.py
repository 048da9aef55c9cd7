"""Could someone other than root change the code the hook runs as root?

The shim runs its interpreter with cpuguard's ``python_path``; whoever can
write the interpreter, a directory on that path or a module in it (or any
directory above them) can run code as root at the next VM start. This is
``cpuguard.trust``'s StrictModes rule applied to that code: files go through
:func:`cpuguard.trust.check_trusted`; a path entry is a directory, which
``check_trusted`` does not take, so the same rule is applied here to the
directory and every directory above it (as given and with its symbolic links
resolved), and to the loaded modules below it.

``hook install`` and ``hook status`` warn; they do not refuse, since a test
machine's checkout may well live below ``/tmp``.
"""

from __future__ import annotations

import os
import stat as st
import sys
from collections.abc import Callable, Collection, Iterable, Sequence

from cpuguard.errors import BadInput
from cpuguard.trust import StatFunction, check_trusted


def trusted_owners() -> frozenset[int]:
    """root, and the user running this (the hook's own inputs are checked the same way)."""
    return frozenset({0, os.geteuid()})


def directory_problem(
    path: str,
    *,
    stat: StatFunction = os.stat,
    resolve: Callable[[str], str] = os.path.realpath,
    owners: Collection[int] = frozenset({0}),
) -> str | None:
    """Why ``path`` (a directory) and the directories above it are not trusted, or None."""
    given = os.path.abspath(path)
    for start in dict.fromkeys((given, resolve(given))):
        where = start
        while True:
            try:
                info = stat(where)
            except OSError as exc:
                return f"cannot check {where}: {exc.strerror or exc}"
            subject = "it" if where == given else f"its directory {where}" if where != start else f"its target {where}"
            if where == start and not st.S_ISDIR(info.st_mode):
                return f"{subject} is not a directory"
            if info.st_uid not in owners:
                return f"{subject} is owned by uid {info.st_uid}, not root"
            writers = [name for bit, name in ((st.S_IWGRP, "group"), (st.S_IWOTH, "others")) if info.st_mode & bit]
            if writers:
                return f"{subject} is writable by {' and '.join(writers)} (mode {st.S_IMODE(info.st_mode):04o})"
            parent = os.path.dirname(where)
            if parent == where:
                break
            where = parent
    return None


def loaded_module_files() -> list[str]:
    """Files of the modules this process has imported (cpuguard and its dependencies among them)."""
    return sorted({f for m in list(sys.modules.values()) if isinstance(f := getattr(m, "__file__", None), str)})


def code_problems(
    python: str,
    python_path: Sequence[str],
    *,
    module_files: Iterable[str] | None = None,
    stat: StatFunction = os.stat,
    resolve: Callable[[str], str] = os.path.realpath,
    owners: Collection[int] | None = None,
) -> list[str]:
    """One line per interpreter or ``python_path`` entry that others could change, naming it."""
    owners = trusted_owners() if owners is None else owners
    problems: list[str] = []
    try:
        check_trusted(python, stat=stat, resolve=resolve, owners=owners)
    except BadInput as exc:
        problems.append(f"interpreter {exc}")
    files = list(loaded_module_files() if module_files is None else module_files)
    for entry in python_path:
        problem = directory_problem(entry, stat=stat, resolve=resolve, owners=owners)
        if problem is not None:
            problems.append(f"python_path entry {entry}: not trusted: {problem}")
            continue
        below = [f for f in files if f.startswith(entry.rstrip("/") + "/")]
        untrusted = []
        for path in below:
            try:
                check_trusted(path, stat=stat, resolve=resolve, owners=owners)
            except BadInput as exc:
                untrusted.append(str(exc))
        if untrusted:
            more = f" (and {len(untrusted) - 1} more modules)" if len(untrusted) > 1 else ""
            problems.append(f"python_path entry {entry}: module {untrusted[0]}{more}")
    return problems
