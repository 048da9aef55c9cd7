"""``cpuguard rehearse VM host HOST [--root DIR] [-- COMMAND...]``: thin, like every command.

Exit codes (an interface): 0 passed, 1 failed-cpu, 2 bad input, failed-other
or cannot rehearse, 3 internal error. With several commands (a policy's
``rehearse:`` entries) the worst counts: 1 if any failed on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from cpuguard.errors import EXIT_BAD_INPUT, EXIT_BLOCKED, EXIT_OK, BadInput


@click.command("rehearse", context_settings={"ignore_unknown_options": False})
@click.argument("words", nargs=-1, required=True, metavar="VM host HOST [-- COMMAND [ARG...]]")
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Read the guest's files from this extracted root directory (a restored backup) instead of its disks.",
)
@click.option("--expect-status", type=int, default=0, show_default=True, help="Exit status that means it worked.")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True, help="Seconds it may run.")
@click.option("--memory", type=click.IntRange(min=256), default=4096, show_default=True, help="MiB of address space.")
@click.option("--file", "files", multiple=True, help="Another guest file the command needs (a dlopen'ed module).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--policies", type=click.Path(path_type=Path, file_okay=False), default=None, help="Policies directory.")
@click.option("--inventory", type=click.Path(path_type=Path), default=None, help="Inventory file.")
@click.option(
    "--log", "log", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Rehearsal log (one JSON line per rehearsal). Default: rehearsal_log of --config.",
)  # fmt: skip
@click.option(
    "--config", "config", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="cpuguard's configuration (default /etc/cpuguard/config.yaml).",
)  # fmt: skip
def rehearse(
    words: tuple[str, ...],
    root: Path | None,
    expect_status: int,
    timeout: float,
    memory: int,
    files: tuple[str, ...],
    fmt: str,
    policies: Path | None,
    inventory: Path | None,
    log: Path | None,
    config: Path | None,
) -> None:
    """Run the guest's own COMMAND under an emulated copy of HOST's CPU, sandboxed.

    VM is an inventory name or a domain XML file: its files are read from its
    disks, read-only (or from --root DIR). HOST is an inventory name or any host
    SOURCE (uarch:haswell, a snapshot file...). Without a COMMAND, the rehearse:
    entries of VM's policy run, each with its own status and time; without those,
    the default of a workload cpuguard recognises (Asterisk: a real start that
    loads its modules, then stops).

    \b
    Exit codes: 0 passed, 1 failed on the CPU (the fault is named),
    2 bad input, failed otherwise or cannot rehearse, 3 internal error.
    """
    from cpuguard.cli import _fleet
    from cpuguard.rehearse.records import RehearseEntry
    from cpuguard.rehearse.sandbox import Limits

    head, command = _split(words)
    fleet = _fleet(policies, inventory)
    facts = fleet.host(head[2])
    vm = head[0]
    entries: list[RehearseEntry] = []
    if command:
        entries = [RehearseEntry(tuple(command), expect_status, timeout, files)]
    else:  # the commands the VM's policy lists
        _, _, policy, _ = fleet.vm(vm)
        if policy is not None and policy.rehearse:
            entries = list(policy.rehearse)
    with _guest_root(vm, root, entries, fleet.inventory.root, inventory) as (name, guest_root):
        if not entries:
            entries = _defaults(name, guest_root)
        rehearsals = [
            _rehearse_one(guest_root, entry, facts, name, Limits(seconds=entry.timeout, memory_mib=memory))
            for entry in entries
        ]
    kept_in = None if fleet.fallback else fleet.inventory.root  # never write into the bundled example
    for problem in _record(rehearsals, kept_in, log, config):
        click.echo(f"cpuguard: warning: {problem}", err=True)
    if fmt == "json":
        from cpuguard.render.jsonout import render_json

        click.echo(render_json(rehearsals[0] if command else rehearsals), nl=False)
    else:
        from cpuguard.render.rehearse_text import render_rehearsal_text

        click.echo("\n".join(render_rehearsal_text(r) for r in rehearsals), nl=False)
    raise SystemExit(exit_code([r.outcome.value for r in rehearsals]))


def _rehearse_one(root: Path, entry: Any, facts: Any, vm: str, limits: Any) -> Any:
    from cpuguard.rehearse.run import rehearse_root

    return rehearse_root(
        root, entry.argv, facts, vm=vm, expected_status=entry.expect_status, limits=limits,
        extra_files=entry.files, generated=entry.generated,
    )  # fmt: skip


def _defaults(vm: str, root: Path) -> list[Any]:
    from cpuguard.rehearse.guestroot import GuestRoot
    from cpuguard.rehearse.workloads import RECOGNISED, default_entries

    entries = default_entries(GuestRoot(root))
    if not entries:
        raise BadInput(
            vm,
            "nothing to run: give the command after --, or list rehearse: entries in its policy"
            f" (no workload with a default was found: {RECOGNISED})",
        )
    return entries


@contextlib.contextmanager
def _guest_root(
    vm: str, root: Path | None, entries: list[Any], policies: Path, inventory: Path | None
) -> Iterator[tuple[str, Path]]:
    """(the VM's name, a root directory holding what the rehearsals read): ``--root`` itself, or
    a private copy of those files read from the VM's disks (removed when the rehearsals end)."""
    if root is not None:
        yield vm, root
        return
    from cpuguard.guest.cli import guest_disks
    from cpuguard.rehearse.fromdisk import staged_guest_root

    name, disks, _notes = guest_disks(vm, policies, inventory)
    commands = [list(entry.argv) for entry in entries]
    files = sorted({f for entry in entries for f in entry.files})
    with staged_guest_root(name, disks, commands, files, defaults=not entries) as staged:
        yield name, staged


def _record(rehearsals: list[Any], policies: Path | None, log: Path | None, config: Path | None) -> list[str]:
    """Keep each rehearsal as evidence for the reports, and log it (one JSON line each)."""
    from cpuguard.config import DEFAULT_CONFIG, read_config
    from cpuguard.rehearse.evidence import record_rehearsals

    if log is None:
        log = read_config(config or DEFAULT_CONFIG, required=config is not None).rehearsal_log
    if not log.parent.is_dir():
        missing = f"rehearsal not logged: {log.parent}: directory does not exist"
        return [missing, *record_rehearsals(rehearsals, policies, None)]
    return record_rehearsals(rehearsals, policies, log)


def exit_code(outcomes: list[str]) -> int:
    """1 when any command failed on the CPU, else 2 when any did not pass, else 0."""
    if "failed-cpu" in outcomes:
        return EXIT_BLOCKED
    return EXIT_OK if all(o == "passed" for o in outcomes) else EXIT_BAD_INPUT


def _split(words: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``VM host HOST`` and the command (click has already dropped the ``--``)."""
    if len(words) < 3 or words[1] != "host":
        raise click.UsageError("expected: cpuguard rehearse VM host HOST [--root DIR] [-- COMMAND [ARG...]]")
    return list(words[:3]), list(words[3:])


COMMANDS = [rehearse]
