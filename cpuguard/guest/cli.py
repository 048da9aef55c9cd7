"""``cpuguard scan --guest VM`` / ``--disk IMAGE`` and ``cpuguard inventory scan-guests``.

Thin: find the disks, call :func:`cpuguard.guest.inspect.inspect_guests`,
render, store. Exit codes as everywhere: 0 done, 2 bad input or an
incomplete result (what was read is still printed and stored), 3 a bug.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cpuguard.errors import BadInput, UnknownName
from cpuguard.guest.records import Disk, GuestScan

#: Guests read at the same time by ``inventory scan-guests`` (each worker is an appliance VM).
DEFAULT_WORKERS = 2


def guest_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME/cpuguard/guests``: results of unchanged guests, by fingerprint (beside
    the scanner's cache)."""
    from cpuguard.scan.cache import default_cache_dir

    return default_cache_dir(environ).parent / "guests"


def _inventory_disks(policies: Path, inventory: Path | None, vm: str) -> tuple[str, list[Disk], list[str]]:
    from cpuguard.guest.disks import disks_of_domain
    from cpuguard.inventory import read_inventory

    inv = read_inventory(policies, inventory)
    entry = inv.vms.get(vm)
    if entry is None:
        known = sorted(inv.vms)
        raise UnknownName(inv.path or policies, "VM", vm, difflib.get_close_matches(vm, known, n=3))
    if entry.domain is not None:
        name, disks, notes = disks_of_domain(entry.domain)
        return name, disks, notes
    host = inv.hosts.get(entry.host) if entry.host else None
    from cpuguard.hosts.sources import is_uri

    if host is None or not is_uri(host.source):
        raise BadInput(inv.path, f"vms.{vm}: no domain XML to find its disks in (give 'domain:' or a host URI)")
    from cpuguard.libvirt_api import connect

    with connect(host.source) as hv:
        text = hv.domain_xml(vm).encode()
    name, disks, notes = disks_of_domain(Path(f"{host.source}#{vm}"), text=text)
    return name, disks, notes


def guest_disks(spec: str, policies: Path, inventory: Path | None) -> tuple[str, list[Disk], list[str]]:
    """(VM name, disks, notes) of an inventory VM or a domain XML file."""
    from cpuguard.guest.disks import disks_of_domain

    path = Path(spec)
    if path.suffix.lower() == ".xml" or path.exists():  # a file, or a pipe: <(virsh dumpxml VM)
        return disks_of_domain(path)
    return _inventory_disks(policies, inventory, spec)


class _Bar:
    """Progress on stderr: a bar on a terminal, one line per guest otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()
        self.label = label

    def __call__(self, event: Any) -> None:
        if event.kind != "done":
            if event.kind == "launched" and self.tty:
                click.echo(f"\r\x1b[K{self.label}: appliance running", err=True, nl=False)
            return
        self.done += 1
        state = "ok" if event.ok else event.detail
        if not event.ok and not event.detail.startswith("incomplete"):
            state = f"failed: {event.detail}"
        if self.tty:
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "-" * (width - filled)
            click.echo(f"\r\x1b[K{self.label} [{bar}] {self.done}/{self.total} {event.vm}: {state}", err=True, nl=False)
            if self.done == self.total:
                click.echo("", err=True)
        else:
            click.echo(f"[{self.done}/{self.total}] {event.vm}: {state}", err=True)


def _reuse(paths: Sequence[Path], fingerprint: str) -> GuestScan | None:
    """The first stored result of the same unchanged disks, or None."""
    from cpuguard.guest.store import MAX_RESULT_BYTES, parse_result, scan_from_dict
    from cpuguard.xmlsafe import read_bytes

    for path in paths:
        if not fingerprint or not path.is_file():
            continue
        try:
            raw = parse_result(read_bytes(path, MAX_RESULT_BYTES), path)
            if raw.get("fingerprint") == fingerprint:
                return replace(scan_from_dict(raw, path), reused_from=_moment_of(raw))
        except BadInput:
            continue
    return None


def _moment_of(raw: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(raw["scanned_at"]).replace("Z", "+00:00"))


def read_guests(
    jobs: Sequence[tuple[str, list[Disk], list[str]]],
    *,
    all_files: bool,
    rescan: bool,
    stored: dict[str, list[Path]],
    workers: int,
    timeout: float,
    scan_cache: Path | None,
    progress: Any,
) -> dict[str, Any]:
    """Inspect the guests of ``jobs``; guests whose disks did not change reuse their stored result."""
    from cpuguard.guest.inspect import GuestJob, inspect_guests
    from cpuguard.guest.store import fingerprint

    results: dict[str, Any] = {}
    todo = []
    prints: dict[str, str] = {}
    for name, disks, notes in jobs:
        prints[name] = fingerprint(disks, all_files=all_files)
        reused = None if rescan else _reuse(stored.get(name, []), prints[name])
        if reused is not None:
            results[name] = reused
        else:
            todo.append(GuestJob(name, tuple(disks), tuple(notes)))
    if todo:
        found = inspect_guests(
            todo,
            all_files=all_files,
            concurrency=workers,
            guest_timeout=timeout,
            scan_cache=scan_cache,
            progress=progress,
        )
        for name, result in found.items():
            results[name] = replace(result, fingerprint=prints[name]) if isinstance(result, GuestScan) else result
    return results


def run_scan(
    *,
    guest: str | None,
    disks: Sequence[Path],
    follow_backing: bool,
    all_files: bool,
    fmt: str,
    output: Path | None,
    merge_into: Path | None,
    policies: Path | None,
    no_cache: bool,
    timeout: float,
) -> None:
    """``cpuguard scan --guest VM`` or ``--disk IMAGE...``: print, store in the cache, merge."""
    from cpuguard.guest.disks import disks_of_images
    from cpuguard.guest.inspect import GuestFailure
    from cpuguard.guest.store import scan_to_dict, write_result
    from cpuguard.scan.cache import default_cache_dir

    if guest is not None and disks:
        raise click.UsageError("give --guest or --disk, not both")
    kept: list[Path] = []
    if guest is not None:
        from cpuguard.fleet import find_policies_dir
        from cpuguard.guest.store import result_path

        root = find_policies_dir(policies)
        name, found, notes = guest_disks(guest, root, None)
        kept.append(result_path(root, name))  # what inventory scan-guests stored, if the disks did not change
    else:
        found, notes = disks_of_images(disks, follow_backing=follow_backing)
        name = Path(disks[0]).name
    cache = guest_cache_dir()
    stored = {} if no_cache else {name: [cache / f"{_safe(name)}.json", *kept]}
    results = read_guests(
        [(name, found, notes)],
        all_files=all_files,
        rescan=no_cache,
        stored=stored,
        workers=1,
        timeout=timeout,
        scan_cache=None if no_cache else default_cache_dir(),
        progress=_Bar(1, "reading the guest") if sys.stderr.isatty() else None,
    )
    result = results[name]
    if isinstance(result, GuestFailure):
        raise BadInput(f"guest {name}", result.problem)
    assert isinstance(result, GuestScan)
    if not no_cache and result.reused_from is None:
        try:
            cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_result(cache / f"{_safe(name)}.json", scan_to_dict(result))
        except (BadInput, OSError):
            pass  # a cache that cannot be written costs a rescan, nothing else
    _print(result, fmt, output)
    if merge_into is not None:
        _merge(result, merge_into)
    if result.problems:
        raise BadInput(f"guest {name}", f"incomplete: {result.problems[0]}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "guest"


def _print(result: GuestScan, fmt: str, output: Path | None) -> None:
    import json

    from cpuguard.guest.store import scan_to_dict

    if fmt == "json":
        text = json.dumps(scan_to_dict(result), indent=2) + "\n"
    elif fmt == "yaml":
        import yaml

        section = {"binaries": scan_to_dict(result)["binaries"]}
        header = f"# cpuguard scan --guest: what {result.vm}'s workload needs from the CPU (a policy's binaries:)\n"
        text = header + yaml.safe_dump(section, sort_keys=False, default_flow_style=False, width=100)
    else:
        from cpuguard.knowledge import load_knowledge
        from cpuguard.levels import level_features
        from cpuguard.render.guest_text import render_guest_text

        baseline = load_knowledge().x86_64_baseline | level_features("x86-64-v1")
        text = render_guest_text(result, baseline)
    from cpuguard.scan.output import emit

    emit(text, output)


def _merge(result: GuestScan, policy: Path) -> None:
    from cpuguard.guest.store import scan_to_dict
    from cpuguard.scan.output import merge_into_policy

    count = merge_into_policy(policy, scan_to_dict(result)["binaries"], result.vm)
    click.echo(f"merged {count} binar{'y' if count == 1 else 'ies'} of {result.vm} into {policy}", err=True)
    if result.os_need is not None:
        click.echo(
            f"note: the guest OS needs {result.os_need.level}; a policy keeps only binaries "
            "(inventory scan-guests stores the OS floor too)",
            err=True,
        )


@click.command("scan-guests")
@click.argument("vms", nargs=-1)
@click.option("--policies", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--inventory", type=click.Path(path_type=Path), default=None)
@click.option("--workers", type=click.IntRange(1, 64), default=DEFAULT_WORKERS, show_default=True,
              help="Appliances running at the same time.")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=1), default=900.0, show_default=True,
              help="Seconds one guest may take once its appliance runs.")  # fmt: skip
@click.option("--all-files", is_flag=True, help="Scan package-owned files too.")
@click.option("--rescan", is_flag=True, help="Read every guest again, even when its disks did not change.")
def scan_guests(
    vms: tuple[str, ...],
    policies: Path | None,
    inventory: Path | None,
    workers: int,
    timeout: float,
    all_files: bool,
    rescan: bool,
) -> None:
    """Read the workloads of the inventory's VMs (or those named) from their disks.

    Results land in POLICIES/guests/VM.json, where check, plan, metrics and
    the hook pick them up. Exit 0 when every guest was read completely, 2 when
    some could not be (the others are stored).
    """
    from cpuguard.fleet import find_policies_dir
    from cpuguard.guest.inspect import GuestFailure
    from cpuguard.guest.store import result_path, scan_to_dict, write_result
    from cpuguard.inventory import read_inventory
    from cpuguard.scan.cache import default_cache_dir

    root = find_policies_dir(policies)
    inv = read_inventory(root, inventory)
    names = list(vms) or sorted(inv.vms)
    if not names:
        raise BadInput(inv.path or root, "no VMs in the inventory")
    failures: dict[str, str] = {}
    jobs = []
    for name in names:
        try:
            vm, disks, notes = _inventory_disks(root, inventory, name)
        except BadInput as exc:
            if isinstance(exc, UnknownName):
                raise
            failures[name] = exc.line()
            continue
        jobs.append((name, disks, notes) if vm == name else (name, disks, [*notes, f"domain name {vm}"]))
    bar = _Bar(len(names), "reading guests")
    for name, problem in failures.items():
        bar(_Done(name, problem))
    results = read_guests(
        jobs,
        all_files=all_files,
        rescan=rescan,
        stored={name: [result_path(root, name)] for name, _d, _n in jobs},
        workers=workers,
        timeout=timeout,
        scan_cache=default_cache_dir(),
        progress=bar,
    )
    incomplete = dict(failures)
    written = 0
    for name in names:
        result = results.get(name)
        if isinstance(result, GuestFailure):
            incomplete[name] = result.problem
        elif isinstance(result, GuestScan):
            if result.reused_from is not None:
                bar(_Done(name, ""))
                click.echo(f"{name}: disks unchanged since {result.reused_from:%Y-%m-%d %H:%M} UTC, kept", err=True)
                continue
            write_result(result_path(root, name), scan_to_dict(result))
            written += 1
            if result.problems:
                incomplete[name] = f"incomplete: {result.problems[0]}"
    for name, problem in sorted(incomplete.items()):
        click.echo(f"cpuguard: guest {name}: {problem}", err=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    click.echo(f"read {len(names) - len(incomplete)} of {len(names)} guests ({written} written to "
               f"{root / 'guests'}, {stamp})", err=True)  # fmt: skip
    if incomplete:
        raise SystemExit(2)


class _Done:
    """A progress event for a guest that never reached an appliance (bad domain XML...)."""

    def __init__(self, vm: str, problem: str) -> None:
        self.kind = "done"
        self.vm = vm
        self.ok = not problem
        self.detail = problem


#: Added to ``cpuguard inventory``.
INVENTORY_COMMANDS = [scan_guests]
