"""A VM's files for a rehearsal, read from its disks (read-only) into a private directory.

The appliance runs in a worker process (:mod:`cpuguard.rehearse.diskworker`),
bounded in time like the guest inspection's; what it copies is a partial root
of the guest that the rehearsal then reads as it reads an extracted one. The
copy is private (mode 0700) and removed when the rehearsals end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from cpuguard.errors import BadInput
from cpuguard.guest.errors import one_line
from cpuguard.guest.inspect import GUEST_TIMEOUT, LAUNCH_TIMEOUT, Worker, disk_json
from cpuguard.guest.records import Disk

WORKER_MODULE = "cpuguard.rehearse.diskworker"


class CannotRead(BadInput):
    """The VM's disks could not be read (exit 2, one line)."""


@contextlib.contextmanager
def staged_guest_root(
    vm: str,
    disks: Sequence[Disk],
    commands: Sequence[Sequence[str]],
    files: Sequence[str],
    *,
    defaults: bool = False,
    timeout: float = LAUNCH_TIMEOUT + GUEST_TIMEOUT,
    environ: Mapping[str, str] = os.environ,
) -> Iterator[Path]:
    """A directory holding what rehearsing ``commands`` (or, with ``defaults``, the defaults
    of the workloads found) reads from ``vm``'s disks."""
    if not disks:
        raise CannotRead(vm, "no disk to read the guest's files from")
    staging = Path(tempfile.mkdtemp(prefix="cpuguard-rehearse-guest-"))
    try:
        os.chmod(staging, 0o700)
        job = {
            "staging": str(staging),
            "guest": {"vm": vm, "disks": [disk_json(d) for d in disks]},
            "commands": [list(argv) for argv in commands],
            "files": list(files),
            "defaults": defaults,
        }
        worker = Worker(job, environ, module=WORKER_MODULE)
        deadline = time.monotonic() + timeout
        try:
            while True:
                event = worker.next(deadline - time.monotonic())
                if event == {}:
                    raise CannotRead(vm, f"its disks could not be read within {timeout:g} s")
                if event is None:
                    raise CannotRead(vm, "the worker reading its disks ended without a result")
                if event.get("event") == "failed":
                    raise CannotRead(vm, one_line(str(event.get("problem", "its disks could not be read"))))
                if event.get("event") == "done":
                    break
        finally:
            worker.kill()
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
