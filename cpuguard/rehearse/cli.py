"""``cpuguard rehearse VM host HOST --root DIR -- COMMAND...``: thin, like every command.

Exit codes (an interface): 0 passed, 1 failed-cpu, 2 bad input, failed-other
or cannot rehearse, 3 internal error.
"""

from __future__ import annotations

from pathlib import Path

import click

from cpuguard.errors import EXIT_BAD_INPUT, EXIT_BLOCKED, EXIT_OK, BadInput

EXIT_CODES = {"passed": EXIT_OK, "failed-cpu": EXIT_BLOCKED}


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

    VM names the guest in the answer; its files come from --root. HOST is an
    inventory name or any host SOURCE (uarch:haswell, a snapshot file...).
    """
    from cpuguard.cli import _fleet
    from cpuguard.rehearse.run import rehearse_root
    from cpuguard.rehearse.sandbox import Limits

    head, command = _split(words)
    rehearsal = rehearse_root(
        root, command, _fleet(policies).host(head[2]), vm=head[0], expected_status=expect_status,
        limits=Limits(seconds=timeout, memory_mib=memory), extra_files=files,
    )  # fmt: skip
    if fmt == "json":
        from cpuguard.render.jsonout import render_json

        click.echo(render_json(rehearsal), nl=False)
    else:
        from cpuguard.render.rehearse_text import render_rehearsal_text

        click.echo(render_rehearsal_text(rehearsal), nl=False)
    raise SystemExit(EXIT_CODES.get(rehearsal.outcome.value, EXIT_BAD_INPUT))


def _split(words: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``VM host HOST`` and the command (click has already dropped the ``--``)."""
    if len(words) < 3 or words[1] != "host":
        raise click.UsageError("expected: cpuguard rehearse VM host HOST --root DIR -- COMMAND [ARG...]")
    command = list(words[3:])
    if not command:
        raise BadInput(None, "nothing to run: give the command after --")
    return list(words[:3]), command


COMMANDS = [rehearse]
