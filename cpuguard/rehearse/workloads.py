"""Default rehearsals for workloads cpuguard recognises in a guest (no command, no policy entry).

A default must reach the workload's real code: ``asterisk -V`` exits 0 on any
CPU, because Asterisk's ``main()`` reaches its vectorised code only with more
arguments and its modules only when it boots. The Asterisk default therefore
boots it for real, in the foreground, with the guest's own modules, and stops
it once every module has loaded: a configuration file made for the rehearsal
(``-C``) keeps the guest's module directory, points everything Asterisk writes
(run, log, database, spool) at the sandbox's private ``/tmp``, and asks for
``core stop now`` as a startup command (``cli.conf`` ``[startup_commands]``,
run after the modules are loaded: Asterisk's ``asterisk_daemon()``).
"""

from __future__ import annotations

import posixpath
import re

from cpuguard.rehearse.guestroot import GuestRoot
from cpuguard.rehearse.records import RehearseEntry

#: Where a guest's Asterisk lives: source builds (/usr/sbin, the default prefix /usr), packages.
ASTERISK_PROGRAMS = ("/usr/sbin/asterisk", "/usr/local/sbin/asterisk")
#: Its asterisk.conf (the -C default of a source build and of distribution packages).
ASTERISK_CONF = ("/etc/asterisk/asterisk.conf", "/usr/local/etc/asterisk/asterisk.conf")
#: Module directories when asterisk.conf does not name one: a source build's lib and lib64
#: layouts, Debian's multiarch one.
ASTERISK_MODULE_DIRS = (
    "/usr/lib/asterisk/modules",
    "/usr/lib64/asterisk/modules",
    "/usr/lib/x86_64-linux-gnu/asterisk/modules",
    "/usr/local/lib/asterisk/modules",
)
#: Where the rehearsal's own configuration lies in the sandbox (beside qemu-user, read-only).
ASTERISK_REHEARSAL_DIR = "/.cpuguard/workload/asterisk"
#: Modules copied at most (a full build has about 250).
MAX_MODULES = 1000
_ASTMODDIR = re.compile(r"^\s*astmoddir\s*=>?\s*(\S+)\s*$", re.MULTILINE)


def _module_dir(root: GuestRoot) -> str | None:
    for conf in ASTERISK_CONF:
        data = root.read_file(conf)
        if data is None:
            continue
        named = _ASTMODDIR.search(data.decode("utf-8", "replace"))
        if named and named.group(1).startswith("/"):
            return named.group(1)
    return next((d for d in ASTERISK_MODULE_DIRS if root.resolve(d) is not None), None)


def asterisk_entry(root: GuestRoot, program: str) -> RehearseEntry:
    """Boot the guest's Asterisk with its own modules, and stop it when they are loaded."""
    module_dir = _module_dir(root)
    modules = tuple(root.glob(posixpath.join(module_dir, "*.so"))[:MAX_MODULES]) if module_dir else ()
    directories = "\n".join(
        [
            "[directories]",
            f"astetcdir => {ASTERISK_REHEARSAL_DIR}",
            f"astmoddir => {module_dir or ASTERISK_MODULE_DIRS[0]}",
            "astvarlibdir => /tmp",
            "astdbdir => /tmp",
            "astkeydir => /tmp",
            "astdatadir => /tmp",
            "astagidir => /tmp",
            "astspooldir => /tmp",
            "astrundir => /tmp",
            "astlogdir => /tmp",
            "astsbindir => " + posixpath.dirname(program),
            "[options]",
            "verbose = 0",
            "",
        ]
    )
    generated = (
        (f"{ASTERISK_REHEARSAL_DIR}/asterisk.conf", directories),
        (f"{ASTERISK_REHEARSAL_DIR}/modules.conf", "[modules]\nautoload = yes\n"),
        (f"{ASTERISK_REHEARSAL_DIR}/cli.conf", "[startup_commands]\ncore stop now = yes\n"),
    )
    return RehearseEntry(
        argv=(program, "-f", "-n", "-q", "-C", f"{ASTERISK_REHEARSAL_DIR}/asterisk.conf"),
        expect_status=0,
        timeout=120.0,
        files=modules,
        description=f"boot Asterisk with its {len(modules)} modules, stop once they are loaded",
        generated=generated,
    )


def default_entries(root: GuestRoot) -> list[RehearseEntry]:
    """What to rehearse in a guest when nobody said: one entry per recognised workload."""
    entries = []
    program = next((p for p in ASTERISK_PROGRAMS if root.exists(p)), None)
    if program is not None:
        entries.append(asterisk_entry(root, program))
    return entries


#: Said when nothing is recognised.
RECOGNISED = "Asterisk"
