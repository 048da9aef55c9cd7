"""The ``cpuguard`` command line: parse arguments, call the core, print, return an exit code.

Exit codes (an interface): 0 allowed (possibly with warnings), 1 blocked,
2 bad input or usage, 3 internal error, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from cpuguard import __version__
from cpuguard.errors import EXIT_BAD_INPUT, EXIT_BLOCKED, EXIT_INTERNAL, EXIT_OK, CpuguardError
from cpuguard.records import Move, Outcome

FORMATS = click.Choice(["text", "json"])


def _fleet(policies: Path | None, inventory: Path | None = None):  # type: ignore[no-untyped-def]
    from cpuguard.fleet import Fleet, find_policies
    from cpuguard.knowledge import load_knowledge

    directory, fallback = find_policies(policies)
    return Fleet.load(directory, load_knowledge(), fallback=fallback, inventory=inventory)


policies_option = click.option(
    "--policies",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Policies directory (inventory.yaml, vms/). Default: $CPUGUARD_POLICIES, "
    "/etc/cpuguard/config.yaml, ./policies, the bundled example fleet.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cpuguard")
def cli() -> None:
    """Refuse VM moves onto hosts whose CPU cannot run the workload, and say why."""


@cli.group()
def check() -> None:
    """Decide whether a VM (or a set of binaries) may land on a host."""


def _split_host(words: Sequence[str], usage: str) -> tuple[list[str], str]:
    if len(words) < 3 or words[-2] != "host" or not words[-1].strip():
        raise click.UsageError(f"expected: {usage}")
    return list(words[:-2]), words[-1]


@check.command("vm", context_settings={"ignore_unknown_options": False})
@click.argument("words", nargs=-1, required=True, metavar="VM host HOST")
@click.option("--live/--cold", "live", default=True, help="Kind of move (default: live).")
@click.option("--from-host", "source", default=None, help="Where the VM runs now (default: the inventory's).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
@click.option("--verbose", "-v", is_flag=True, help="List every feature by name (text is grouped by x86-64 level).")
@policies_option
@click.option(
    "--inventory",
    type=click.Path(path_type=Path),
    default=None,
    help="Inventory file, or a directory holding inventory.yaml (e.g. from `cpuguard inventory collect`); "
    "default: POLICIES/inventory.yaml.",
)
def check_vm_cmd(
    words: tuple[str, ...],
    live: bool,
    source: str | None,
    fmt: str,
    verbose: bool,
    policies: Path | None,
    inventory: Path | None,
) -> None:
    """May VM move to HOST?

    VM is an inventory name, a policy name or a domain XML file. HOST is an
    inventory name or any host SOURCE: a snapshot / capabilities /
    domcapabilities / cpuinfo file, a libvirt URI, model:NAME, uarch:NAME,
    level:x86-64-vN.

    \b
    Exit codes: 0 allowed (possibly with warnings), 1 blocked,
    2 bad input or usage (one line naming the file and the problem),
    3 internal error, 130 interrupted.
    """
    from cpuguard.fleet import check_vm

    vms, host = _split_host(words, "cpuguard check vm VM host HOST")
    if len(vms) != 1:
        raise click.UsageError("expected exactly one VM: cpuguard check vm VM host HOST")
    verdict = check_vm(_fleet(policies, inventory), vms[0], host, Move.LIVE if live else Move.COLD, source)
    _emit_verdict(verdict, fmt, verbose)


@check.command("binary")
@click.argument("words", nargs=-1, required=True, metavar="PATH... host HOST")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.option("--no-cache", is_flag=True, help="Rescan even unchanged files.")
@click.option("--verbose", "-v", is_flag=True, help="List every feature by name (text is grouped by x86-64 level).")
@policies_option
def check_binary_cmd(words: tuple[str, ...], fmt: str, no_cache: bool, verbose: bool, policies: Path | None) -> None:
    """May these binaries run on HOST? Scans them (files or directories) like `cpuguard scan`
    and applies the cold rule: same verdicts and exit codes as `check vm`."""
    from cpuguard.fleet import check_binaries

    paths, host = _split_host(words, "cpuguard check binary PATH... host HOST")
    verdict = check_binaries(_fleet(policies), [Path(p) for p in paths], host, use_cache=not no_cache)
    _emit_verdict(verdict, fmt, verbose)


def _emit_verdict(verdict, fmt: str, verbose: bool = False) -> None:  # type: ignore[no-untyped-def]
    if fmt == "json":
        from cpuguard.render.jsonout import render_json

        click.echo(render_json(verdict), nl=False)
    else:
        from cpuguard.render.verdict_text import render_text

        click.echo(render_text(verdict, verbose), nl=False)
    raise SystemExit(EXIT_BLOCKED if verdict.outcome is Outcome.BLOCK else EXIT_OK)


def _existing_parent(_ctx: click.Context, _param: click.Parameter, path: Path | None) -> Path | None:
    """Refuse an output file in a directory that does not exist, before any work: an output is
    never the reason a directory comes into being (a typo would leave it behind, made by root)."""
    from cpuguard.errors import BadInput

    if path is not None and not path.parent.is_dir():
        raise BadInput(path, f"directory does not exist: {path.parent}")
    return path


@cli.group()
def host() -> None:
    """Host facts: snapshot this machine, show any host."""


@host.command("snapshot")
@click.option(
    "--from",
    "sources",
    multiple=True,
    default=("local",),
    show_default=True,
    help="Host SOURCE to capture; repeat it to give several views of one host (e.g. capabilities and "
    "domcapabilities XML): the one closest to what a guest gets wins.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    callback=_existing_parent,
    help="Write here (atomically) instead of standard output; its directory must exist.",
)
@click.option("--name", default=None, help="Host name recorded in the snapshot.")
def host_snapshot(sources: tuple[str, ...], output: Path | None, name: str | None) -> None:
    """Capture host facts into a snapshot file (what the hook reads)."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from cpuguard.hosts.snapshot import snapshot_to_dict, write_snapshot
    from cpuguard.hosts.sources import preferred, resolve_host
    from cpuguard.knowledge import load_knowledge
    from cpuguard.render.jsonout import render_json

    knowledge = load_knowledge()
    facts = preferred([resolve_host(source, knowledge, name=name or "") for source in sources])
    facts = replace(
        facts,
        name=name or facts.name,
        captured_at=facts.captured_at or datetime.now(UTC),
        source=facts.source,
    )
    if output is None:
        click.echo(render_json(snapshot_to_dict(facts)), nl=False)
    else:
        write_snapshot(facts, output)
        click.echo(
            f"wrote {output}: {facts.name or '(unnamed)'}, {len(facts.flags)} features, from {facts.source}", err=True
        )


@host.command("show")
@click.argument("host_spec", metavar="HOST")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.option("--verbose", "-v", is_flag=True, help="List every feature by name (text is grouped by x86-64 level).")
@policies_option
def host_show(host_spec: str, fmt: str, verbose: bool, policies: Path | None) -> None:
    """Show what HOST offers: features, x86-64 level, matching libvirt models."""
    from cpuguard.levels import highest_level
    from cpuguard.render.features import host_lines
    from cpuguard.render.jsonout import render_json

    fleet = _fleet(policies)
    facts = fleet.host(host_spec)
    runnable = [m.name for m in fleet.knowledge.cpu_map.runnable_on(facts.flags, facts.vendor or None)]
    models = runnable[:5]
    if fmt == "json":
        data = {"host": facts, "level": highest_level(facts.flags), "libvirt_models": models}
        click.echo(render_json(data), nl=False)
        return
    text = "\n".join(host_lines(facts, host_spec, highest_level(facts.flags), runnable, verbose=verbose))
    click.echo(text)


@cli.command("feature")
@click.argument("names", nargs=-1, required=True)
def feature_cmd(names: tuple[str, ...]) -> None:
    """Translate feature names between spellings (Linux, libvirt, iced, NFD, os-traits)."""
    from cpuguard.errors import BadInput, UnknownFeature
    from cpuguard.knowledge import load_knowledge

    vocabulary = load_knowledge().vocabulary
    unknown: list[str] = []
    for name in names:
        try:
            canonical = vocabulary.canonical(name)
        except UnknownFeature as exc:  # say every one, not only the first
            unknown.append(exc.problem)
            continue
        libvirt = vocabulary.libvirt_name(canonical) or "-"
        click.echo(f"{name}: canonical {canonical}, libvirt {libvirt}")
    if unknown:
        raise BadInput(None, "; ".join(unknown))


#: Modules that contribute commands: each exposes ``COMMANDS``, a list of click commands, and may
#: expose ``INVENTORY_COMMANDS``, subcommands of ``cpuguard inventory``.
COMMAND_MODULES = (
    "cpuguard.scan.cli",
    "cpuguard.hook.cli",
    "cpuguard.planning.cli",
    "cpuguard.guest.cli",
    "cpuguard.advice.cli",
    "cpuguard.rehearse.cli",
)


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part of cpuguard is not installed in this build
            raise
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)
        inventory = cli.commands.get("inventory")
        if isinstance(inventory, click.Group):  # subcommands of `cpuguard inventory` from other parts
            for command in getattr(module, "INVENTORY_COMMANDS", ()):
                inventory.add_command(command)


_register_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the one place that maps exceptions to exit codes."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="cpuguard", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_INTERNAL)
    except click.exceptions.Abort:
        click.echo("cpuguard: interrupted", err=True)
        return 130
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "cpuguard"
        click.echo(f"cpuguard: usage: {exc.format_message()} (see '{command} --help')", err=True)
        return EXIT_BAD_INPUT
    except click.ClickException as exc:
        click.echo(f"cpuguard: error: {exc.format_message()}", err=True)
        return EXIT_BAD_INPUT
    except CpuguardError as exc:
        click.echo(f"cpuguard: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("cpuguard: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # the environment refused: a full disk, a read-only file system...
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"cpuguard: error: {where}{exc.strerror or exc}".replace("\n", "\\n"), err=True)
        return EXIT_BAD_INPUT
    except Exception as exc:  # the last line of defence: one line, not a traceback
        if os.environ.get("CPUGUARD_DEBUG"):
            raise
        click.echo(
            f"cpuguard: internal error: {type(exc).__name__}: {exc} "
            "(a bug; rerun with CPUGUARD_DEBUG=1 for a traceback and report it)",
            err=True,
        )
        return EXIT_INTERNAL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
