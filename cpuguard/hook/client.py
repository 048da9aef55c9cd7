"""What shims installed by cpuguard 0.1 run (``cpuguard.hook.client``): the hook's entry, without
the ``--socket PATH`` they pass first (the hook no longer asks a server). ``cpuguard hook install``
writes a shim that runs :mod:`cpuguard.hook.entry` itself."""

from __future__ import annotations

import sys

from cpuguard.hook.entry import main as entry_main

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy understands this form)
if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return entry_main(args[2:] if args[:1] == ["--socket"] else args)
