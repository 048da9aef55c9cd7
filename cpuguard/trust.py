"""Refuse files that someone other than root could have changed, the way sshd's StrictModes does.

The libvirt hook runs as root and decides from its configuration, the policies and this
host's snapshot. If another user could write one of them -- or replace it, by writing the
directory it lives in or any directory above -- that user could steer a root process. So,
like OpenSSH (``StrictModes``, which refuses a group- or world-writable ``authorized_keys``
or home directory, see sshd_config(5)), cpuguard trusts a file only when it and every
directory up to ``/`` are owned by root and writable by no group and no other user.

Symbolic links are followed: the directories of the link and those of its target are both
checked, since either could be changed to point the hook elsewhere. ACLs and mount options
are not looked at. A world-writable sticky directory such as ``/tmp`` is refused as sshd
refuses it, although the sticky bit protects files from other users' renames: keeping the
rule simple keeps it explainable.

Pure apart from ``stat`` and ``resolve``, which tests replace with a fake file system.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Callable, Collection
from pathlib import Path

from cpuguard.errors import BadInput

#: os.stat-like: follows symbolic links, raises OSError.
StatFunction = Callable[[str], os.stat_result]

ROOT_ONLY: frozenset[int] = frozenset({0})


class UntrustedFile(BadInput):
    """A file the hook must not act on: another user could have written it. ``culprit`` is
    the file itself or the directory that gives the others their way in."""

    def __init__(self, path: str | Path, problem: str, culprit: str) -> None:
        self.culprit = culprit
        super().__init__(path, problem)


def _chain(path: str) -> list[str]:
    """``path`` and every directory above it, up to and including ``/``."""
    chain = [path]
    while True:
        parent = os.path.dirname(chain[-1])
        if parent == chain[-1]:
            return chain
        chain.append(parent)


def _problem(subject: str, info: os.stat_result, owners: Collection[int]) -> str | None:
    if info.st_uid not in owners:
        allowed = "root" if set(owners) <= {0} else "root or uid " + ", ".join(str(o) for o in sorted(owners) if o)
        return f"{subject} is owned by uid {info.st_uid}, not {allowed}"
    writers = [name for bit, name in ((st.S_IWGRP, "group"), (st.S_IWOTH, "others")) if info.st_mode & bit]
    if writers:
        return f"{subject} is writable by {' and '.join(writers)} (mode {st.S_IMODE(info.st_mode):04o})"
    return None


def check_trusted(
    path: str | Path,
    *,
    stat: StatFunction = os.stat,
    resolve: Callable[[str], str] = os.path.realpath,
    owners: Collection[int] = ROOT_ONLY,
) -> None:
    """Raise :class:`UntrustedFile` unless ``path`` is a regular file that only ``owners``
    (root) can change: it and every directory above it, for both the path as given and the
    path its symbolic links lead to. A missing file is a plain :class:`BadInput`."""
    given = os.path.abspath(path)
    try:
        info = stat(given)
    except FileNotFoundError:
        raise BadInput(path, "no such file") from None
    except OSError as exc:
        raise BadInput(path, f"cannot check who may change it: {exc.strerror or exc}") from None
    if not st.S_ISREG(info.st_mode):
        raise UntrustedFile(path, "is not a regular file", given)
    real = resolve(given)
    checked: set[str] = set()
    for chain in (_chain(given), _chain(real)):
        for index, where in enumerate(chain):
            if where in checked:
                continue
            checked.add(where)
            try:
                info = stat(where)
            except OSError as exc:
                raise BadInput(path, f"cannot check {where}: {exc.strerror or exc}") from None
            subject = f"its directory {where}" if index else ("it" if where == given else f"its target {where}")
            problem = _problem(subject, info, owners)
            if problem:
                raise UntrustedFile(path, f"not trusted: {problem}; only files root alone can change are used", where)
