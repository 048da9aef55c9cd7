"""Which libvirt hook calls cpuguard guards, and with which rules.

libvirt runs the qemu hook as ``<hook> <vm> <operation> <sub-operation> <extra>``
with the domain XML on stdin (https://libvirt.org/hooks.html). On the
destination of a live migration it calls ``migrate begin`` first; a restore of
a saved memory image calls ``restore begin``; every start of the QEMU process
(also after those two) calls ``prepare begin``.
"""

from __future__ import annotations

#: libvirt operation -> cpuguard operation name (also the ``on_error`` key and the audit log's ``operation``)
GUARDED = {"migrate": "migrate", "restore": "restore", "prepare": "start"}

#: Operations that bring a running guest's memory here: the live rule applies.
LIVE_OPERATIONS = frozenset({"migrate", "restore"})

#: Only the ``begin`` sub-operation can still stop the move.
SUB_OPERATION = "begin"


def guarded_operation(libvirt_op: str, sub_op: str) -> str | None:
    """cpuguard's name for a guarded call, or None when the hook has nothing to check."""
    if sub_op != SUB_OPERATION:
        return None
    return GUARDED.get(libvirt_op)
