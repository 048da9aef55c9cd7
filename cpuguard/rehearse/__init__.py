"""Rehearse a move: run a guest's own program under an emulated copy of the target host's CPU.

``cpuguard rehearse VM host HOST [--root DIR] [-- COMMAND...]`` reads the
program, its ``DT_NEEDED`` closure and its loader from the VM's disks
(:mod:`.fromdisk`, :mod:`.diskworker`) or an extracted root (:mod:`.guestroot`),
copies them into a throwaway sysroot (:mod:`.sysroot`), builds a ``qemu-x86_64
-cpu`` option from the host's facts (:mod:`.cpu`), runs the command in a
bubblewrap sandbox (:mod:`.sandbox`, :mod:`.run`), reads where it faulted from
QEMU's log and core (:mod:`.qemulog`, :mod:`.core`, :mod:`.fault`), decides the
outcome (:mod:`.decide`, pure) and keeps it as evidence (:mod:`.evidence`).
What to run without a command: the policy's entries, or a recognised
workload's default (:mod:`.workloads`). See docs/rehearse.md.
"""
