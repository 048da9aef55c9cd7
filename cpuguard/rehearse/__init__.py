"""Rehearse a move: run a guest's own program under an emulated copy of the target host's CPU.

``cpuguard rehearse VM host HOST --root DIR -- COMMAND...`` copies the
program, its ``DT_NEEDED`` closure and its loader out of a guest's root into a
throwaway sysroot (:mod:`.sysroot`), builds a ``qemu-x86_64 -cpu`` option from
the host's facts (:mod:`.cpu`), runs the command in a bubblewrap sandbox
(:mod:`.sandbox`, :mod:`.run`), reads where it faulted from QEMU's log
(:mod:`.qemulog`, :mod:`.fault`) and decides the outcome (:mod:`.decide`,
pure). See README, "Rehearsing a move".
"""
