"""``cpuguard rehearse VM host HOST --root DIR -- COMMAND...``: thin, like every command.

Exit codes (an interface): 0 passed, 1 failed-cpu, 2 bad input, failed-other
or cannot rehearse, 3 internal error. With several commands (a policy's
``rehearse:`` entries) the worst counts: 1 if any failed on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import click

from cpuguard.errors import EXIT_BAD_INPUT, EXIT_BLOCKED, EXIT_OK, BadInput


@click.command("rehearse", context_settings={"ignore_unknown_options": False})
@click.argument("words", nargs=-1, required=True, metavar="VM host HOST [-- COMMAND [ARG...]]")
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="The guest's extracted root directory (e.g. a restored backup).",
)
@click.option("--expect-status", type=int, default=0, show_default=True, help="Exit status that means it worked.")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True, help="Seconds it may run.")
@click.option("--memory", type=click.IntRange(min=256), default=4096, show_default=True, help="MiB of address space.")
@click.option("--file", "files", multiple=True, help="Another guest file the command needs (a dlopen'ed module).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--policies", type=click.Path(path_type=Path, file_okay=False), default=None, help="Policies directory.")
def rehearse(
    words: tuple[str, ...],
    root: Path,
    expect_status: int,
    timeout: float,
    memory: int,
    files: tuple[str, ...],
    fmt: str,
    policies: Path | None,
) -> None:
    """Run the guest's own COMMAND under an emulated copy of HOST's CPU, sandboxed.

    VM names the guest; its files come from --root. HOST is an inventory name
    or any host SOURCE (uarch:haswell, a snapshot file...). Without a COMMAND,
    the rehearse: entries of VM's policy run, each with its own status and time.
    """
    from cpuguard.cli import _fleet
    from cpuguard.rehearse.records import RehearseEntry
    from cpuguard.rehearse.run import rehearse_root
    from cpuguard.rehearse.sandbox import Limits

    head, command = _split(words)
    fleet = _fleet(policies)
    facts = fleet.host(head[2])
    if command:
        entries = [RehearseEntry(tuple(command), expect_status, timeout, files)]
    else:  # the commands the VM's policy lists
        _, _, policy, _ = fleet.vm(head[0])
        if policy is None or not policy.rehearse:
            raise BadInput(
                head[0], "nothing to run: give the command after --, or list rehearse: entries in its policy"
            )
        entries = list(policy.rehearse)
    rehearsals = [
        rehearse_root(
            root,
            entry.argv,
            facts,
            vm=head[0],
            expected_status=entry.expect_status,
            limits=Limits(seconds=entry.timeout, memory_mib=memory),
            extra_files=entry.files,
        )
        for entry in entries
    ]
    if fmt == "json":
        from cpuguard.render.jsonout import render_json

        click.echo(render_json(rehearsals[0] if command else rehearsals), nl=False)
    else:
        from cpuguard.render.rehearse_text import render_rehearsal_text

        click.echo("\n".join(render_rehearsal_text(r) for r in rehearsals), nl=False)
    raise SystemExit(exit_code([r.outcome.value for r in rehearsals]))


def exit_code(outcomes: list[str]) -> int:
    """1 when any command failed on the CPU, else 2 when any did not pass, else 0."""
    if "failed-cpu" in outcomes:
        return EXIT_BLOCKED
    return EXIT_OK if all(o == "passed" for o in outcomes) else EXIT_BAD_INPUT


def _split(words: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``VM host HOST`` and the command (click has already dropped the ``--``)."""
    if len(words) < 3 or words[1] != "host":
        raise click.UsageError("expected: cpuguard rehearse VM host HOST --root DIR [-- COMMAND [ARG...]]")
    return list(words[:3]), list(words[3:])


COMMANDS = [rehearse]
