"""``cpuguard advise``: thin -- load the fleet, call the pure advice, render, return the exit code.

Exit codes: 0 advice given; 1 a VM's CPU definition does not give its workload a feature it
needs; 2 bad input, or an item of the fleet could not be read (the advice covers the rest).
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path

import click

from cpuguard.errors import BadInput, UnknownName
from cpuguard.planning.cli import fleet_options

ADVICE_FORMATS = ("text", "json", "markdown", "html")

#: format -> "module:function" of the renderer in cpuguard.render; imported only when used.
RENDERERS = {
    "text": "advice_text:render_advice_text",
    "json": "advice_json:render_advice_json",
    "markdown": "advice_markdown:render_advice_markdown",
    "html": "advice_html:render_advice_html",
}


@click.command("advise")
@click.argument("vms", nargs=-1, metavar="VM...")
@click.option("--all", "every", is_flag=True, help="Advise every VM of the inventory.")
@click.option("--format", "fmt", type=click.Choice(ADVICE_FORMATS), default="text", show_default=True)
@click.option("--verbose", "-v", is_flag=True, help="List every feature by name (text is grouped by x86-64 level).")
@fleet_options
def advise_cmd(
    vms: tuple[str, ...],
    every: bool,
    fmt: str,
    verbose: bool,
    policies: Path | None,
    inventory: Path | None,
    timeout: float,
) -> None:
    """The most portable guest CPU definition each VM's workload allows, and the hosts it opens.

    For each VM: its current CPU configuration and the hosts it reaches now (live, cold),
    what its workload needs and where each need comes from, and the <cpu> element to paste
    into its domain definition (it takes effect at the next cold boot).
    """
    from cpuguard.advice.advise import advise
    from cpuguard.advice.records import Standing
    from cpuguard.fleet import find_policies_dir
    from cpuguard.knowledge import load_knowledge
    from cpuguard.planning.load import load_fleet

    if every == bool(vms):
        raise click.UsageError("give VM names or --all, not both and not neither")
    knowledge = load_knowledge()
    fleet = load_fleet(find_policies_dir(policies), knowledge, inventory=inventory, timeout=timeout)
    unreadable = {p.name for p in fleet.problems if p.kind == "vm"}
    for name in vms:
        if name not in fleet.vms and name not in unreadable:
            close = difflib.get_close_matches(name, list(fleet.vm_hosts), n=3)
            raise UnknownName(fleet.inventory, "VM", name, close)
    names = sorted(fleet.vms) if every else list(dict.fromkeys(n for n in vms if n in fleet.vms))
    problems = [p for p in fleet.problems if every or p.kind != "vm" or p.name in vms]
    if not names and not problems:
        raise BadInput(fleet.inventory, "the inventory lists no VM that could be read")
    advices = [advise(fleet.vms[name], fleet.hosts, knowledge) for name in names]
    module, _, function = RENDERERS[fmt].partition(":")
    render = getattr(importlib.import_module(f"cpuguard.render.{module}"), function)
    options = {"verbose": verbose} if fmt == "text" else {}  # the other formats list every feature
    click.echo(render(advices, problems, **options), nl=False)
    if problems:
        raise SystemExit(2)
    raise SystemExit(1 if any(a.standing is Standing.NOT_GIVEN for a in advices) else 0)


COMMANDS: list[click.Command] = [advise_cmd]
