"""``cpuguard hook ...`` and ``cpuguard audit ...``: thin click commands over cpuguard.hook."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from cpuguard.config import DEFAULT_CONFIG
from cpuguard.errors import EXIT_BLOCKED, EXIT_OK, BadInput
from cpuguard.hook.cache import DEFAULT_CACHE_DIR
from cpuguard.hook.install import DEFAULT_HOOKS_DIR

FILE = click.Path(path_type=Path, dir_okay=False)
DIRECTORY = click.Path(path_type=Path, file_okay=False)

config_option = click.option(
    "--config", type=FILE, default=DEFAULT_CONFIG, show_default=True, help="cpuguard configuration file."
)
hooks_dir_option = click.option(
    "--hooks-dir", type=DIRECTORY, default=DEFAULT_HOOKS_DIR, show_default=True, help="libvirt's qemu hook directory."
)


@click.group("hook")
def hook() -> None:
    """The libvirt hook: install it, see whether it is live, run it by hand."""


@hook.command("run", context_settings={"ignore_unknown_options": True})
@config_option
@click.option("--cache-dir", type=DIRECTORY, default=Path(DEFAULT_CACHE_DIR), show_default=True)
@click.option("--no-cache", is_flag=True, help="Build the context afresh (slow; for debugging).")
@click.option(
    "--audit-log",
    type=FILE,
    default=None,
    help="Where to log when the config cannot be read. Default: what the hook installed in --hooks-dir "
    "for this config uses; else, for the default config, its default log.",
)
@hooks_dir_option
@click.argument("vm")
@click.argument("operation")
@click.argument("sub_operation")
@click.argument("extra", required=False, default="-")
def hook_run(
    config: Path,
    cache_dir: Path,
    no_cache: bool,
    audit_log: Path | None,
    hooks_dir: Path,
    vm: str,
    operation: str,
    sub_operation: str,
    extra: str,
) -> None:
    """Decide as libvirt's hook would: VM OPERATION SUB-OPERATION, the domain XML on stdin.

    Exit 1 blocks. The shim libvirt runs calls the same code
    without click, for speed.
    """
    from cpuguard.hook.entry import main

    cache = ["--no-cache"] if no_cache else ["--cache-dir", str(cache_dir)]
    log = audit_log or installed_audit_log(hooks_dir, config)
    logging = ["--audit-log", str(log)] if log else []
    args = ["--config", str(config), *cache, *logging, "--", vm, operation, sub_operation, extra]
    raise SystemExit(main(args, stdin=sys.stdin.buffer))


def installed_audit_log(hooks_dir: Path, config: Path) -> Path | None:
    """The audit log the installed hook keeps for ``config`` (it logs there when the config is unreadable)."""
    import os

    from cpuguard.hook import shim
    from cpuguard.hook.install import hook_path

    try:
        text = hook_path(hooks_dir).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    settings = shim.read_settings(text) if shim.is_ours(text) else {}
    if settings.get("config") != os.path.abspath(config) or not settings.get("audit_log"):
        return None
    return Path(settings["audit_log"])


@hook.command("install")
@hooks_dir_option
@config_option
@click.option("--cache-dir", type=DIRECTORY, default=Path(DEFAULT_CACHE_DIR), show_default=True)
@click.option("--reload", "reload_", is_flag=True, help="SIGHUP the running libvirt daemon so it finds the hook.")
def hook_install(hooks_dir: Path, config: Path, cache_dir: Path, reload_: bool) -> None:
    """Install the hook into libvirt; write a config and a host snapshot if absent. Idempotent."""
    from cpuguard.hook.install import install, reload_libvirt

    report = install(hooks_dir, config, cache_dir)
    for line in report.done:
        click.echo(line)
    for warning in report.warnings:
        click.echo(f"cpuguard: WARNING: {warning}", err=True)
    if report.needs_reload:
        if reload_:
            click.echo(reload_libvirt())
        else:
            click.echo(
                "libvirt finds new hooks only when it starts or reloads: run "
                "'systemctl reload virtqemud' (or libvirtd), or install again with --reload"
            )


@hook.command("uninstall")
@hooks_dir_option
def hook_uninstall(hooks_dir: Path) -> None:
    """Remove cpuguard's hook (never another tool's)."""
    from cpuguard.hook.install import uninstall

    for line in uninstall(hooks_dir).done:
        click.echo(line)


@hook.command("status")
@hooks_dir_option
@click.option("--config", type=FILE, default=None, help="Default: the one the installed hook uses.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def hook_status(hooks_dir: Path, config: Path | None, fmt: str) -> None:
    """Is the hook installed, would it work, has libvirt run it? Exit 1 unless all is well."""
    from cpuguard.hook.status import status

    checks = status(hooks_dir, config)
    if fmt == "json":
        click.echo(json.dumps([{"check": c.name, "ok": c.ok, "detail": c.detail} for c in checks], indent=2))
    else:
        for check in checks:
            click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<11} {check.detail}")
    raise SystemExit(EXIT_OK if all(c.ok for c in checks) else EXIT_BLOCKED)


def parse_since(text: str, now: datetime) -> datetime:
    """An ISO time, or an age: 30m, 12h, 7d."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].isdigit():
        return now - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput("--since", f"{text!r} is neither an ISO time nor an age like 30m, 12h, 7d") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@click.group("audit")
def audit() -> None:
    """The hook's audit log: what was checked, when, and the verdict."""


@audit.command("show")
@click.option("--log", "log", type=FILE, default=None, help="Audit log. Default: audit_log of --config.")
@config_option
@click.option("--vm", "vms", multiple=True, help="Only this VM (repeatable).")
@click.option("--host", "hosts", multiple=True, help="Only this host (repeatable).")
@click.option(
    "--operation", "operations", multiple=True, type=click.Choice(["migrate", "restore", "start"]), help="Repeatable."
)
@click.option(
    "--verdict", "verdicts", multiple=True, type=click.Choice(["allow", "warn", "block", "error"]), help="Repeatable."
)
@click.option("--since", default=None, help="ISO time or age (30m, 12h, 7d).")
@click.option("--last", type=click.IntRange(min=1), default=None, help="Only the newest N matching records.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def audit_show(
    log: Path | None,
    config: Path,
    vms: tuple[str, ...],
    hosts: tuple[str, ...],
    operations: tuple[str, ...],
    verdicts: tuple[str, ...],
    since: str | None,
    last: int | None,
    fmt: str,
) -> None:
    """Print audit records, oldest first (JSON lines with --format json).

    Before the hook's first decision the config's audit log does not exist: that is an empty
    log (text says so, JSON prints nothing), exit 0. A --log that does not exist is exit 2.
    """
    from cpuguard.config import read_config
    from cpuguard.hook.audit import BadLine, Filter, encode, read, summary

    path = log or read_config(config).audit_log
    wanted = Filter(
        frozenset(vms),
        frozenset(hosts),
        frozenset(operations),
        frozenset(verdicts),
        parse_since(since, datetime.now(UTC)) if since else None,
    )
    try:
        items = list(read(path))
    except FileNotFoundError:
        if log is not None:  # named on the command line: a typo must not look like an empty log
            raise BadInput(path, "no audit log yet (the hook writes it at its first decision)") from None
        if fmt == "text":
            click.echo(f"no audit entries yet ({path} does not exist)")
        return
    except OSError as exc:
        raise BadInput(path, f"cannot read: {exc.strerror or exc}") from None
    records = [r for r in items if not isinstance(r, BadLine) and wanted.matches(r)]
    for bad in (b for b in items if isinstance(b, BadLine)):
        click.echo(f"cpuguard: {path}:{bad.number}: skipped, {bad.problem}", err=True)
    for record in records[-last:] if last else records:
        click.echo(encode(record).decode().rstrip("\n") if fmt == "json" else summary(record))


COMMANDS = [hook, audit]
