"""``cpuguard scan PATH...``: the command line over :func:`scan_paths`.

Thin on purpose: parse options, call the core, print, exit 0 (something
scanned) or raise :class:`BadInput` (exit 2: nothing could be scanned).
Heavy modules are imported inside the command so that loading this module
(which every ``cpuguard`` command does) stays cheap.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from cpuguard.errors import BadInput
from cpuguard.scan.output import check_merge_target, emit, merge_into_policy

if TYPE_CHECKING:
    from cpuguard.scan.records import ScanReport
    from cpuguard.scan.scanner import Progress


class _Bar:
    """A progress line on a terminal, moved by every file: counts of files and of bytes analysed.

    Redrawn at most ``per_second`` times a second (a warm cache finishes thousands of files a
    second) and always for the last file, so it never sits still while files are done.
    """

    def __init__(self, stream: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic,
                 per_second: float = 10.0, width: int = 20) -> None:  # fmt: skip
        self.stream = stream
        self.clock = clock
        self.interval = 1.0 / per_second
        self.width = width
        self.drawn_at: float | None = None
        self.last = ""

    @staticmethod
    def line(event: Progress, width: int = 20) -> str:
        """``scanning [#####.....] 65/248 files, 12.7 of 28.9 MiB analysed``"""
        total = max(event.files_total, event.files_done, 1)
        filled = width * event.files_done // total
        mib = 1 << 20
        return (
            f"scanning [{'#' * filled}{'.' * (width - filled)}] {event.files_done}/{total} files, "
            f"{event.bytes_done / mib:.1f} of {event.bytes_total / mib:.1f} MiB analysed"
        )

    def __call__(self, event: Progress) -> None:
        now = self.clock()
        last = event.files_done >= event.files_total
        if not last and self.drawn_at is not None and now - self.drawn_at < self.interval:
            return
        self.drawn_at = now
        text = self.line(event, self.width)
        self.stream.write("\r" + text + " " * max(0, len(self.last) - len(text)))
        self.stream.flush()
        self.last = text

    def close(self) -> None:
        if self.last:
            self.stream.write("\n")
            self.stream.flush()


def _merge(report: ScanReport, policy: Path) -> int:
    from cpuguard.scan.render import policy_section

    return merge_into_policy(policy, policy_section(report)["binaries"])


@click.command("scan")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--guest", metavar="VM", help="Read a VM's disks: an inventory name or a domain XML file.")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Read a disk image or backup (raw or qcow2); repeat for the disks of one guest.",
)
@click.option(
    "--follow-backing",
    is_flag=True,
    help="With --disk: open the backing files an image's header names (nothing else vouches for them).",
)
@click.option("--all-files", is_flag=True, help="With --guest/--disk: scan package-owned files too.")
@click.option(
    "--policies",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="With --guest: the policies directory whose inventory names the VM.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    help="With --guest/--disk: seconds the guest may take once its appliance runs.",
)
@click.option("--follow-needed", is_flag=True, help="Also scan the shared libraries they load (DT_NEEDED).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "yaml"]),
    default="text",
    show_default=True,
    help="yaml is a policy's binaries: section; json is the full report.",
)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Write here.")
@click.option(
    "--merge-into",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Add or replace these binaries in a VM policy file.",
)
@click.option("--no-cache", is_flag=True, help="Rescan even unchanged files.")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Cache directory (default: $XDG_CACHE_HOME/cpuguard/scan).",
)
@click.option("--jobs", type=click.IntRange(1, 256), help="Decoding processes (default: CPUs).")
def scan(
    paths: tuple[Path, ...],
    guest: str | None,
    disks: tuple[Path, ...],
    follow_backing: bool,
    all_files: bool,
    policies: Path | None,
    timeout: float,
    follow_needed: bool,
    fmt: str,
    output: Path | None,
    merge_into: Path | None,
    no_cache: bool,
    cache_dir: Path | None,
    jobs: int | None,
) -> None:
    """Read which CPU features ELF binaries need.

    PATH is an executable, a shared library or a directory (scanned
    recursively). Features used only after a run-time CPU check (ifunc,
    __builtin_cpu_supports, OpenSSL's capability vector...) are reported as
    dispatched, not required.

    With --guest VM or --disk IMAGE, the files are read from a guest's disks
    (read-only, through a libguestfs appliance): programs owned by no package,
    those of enabled systemd units, and the libraries they load.
    """
    if guest is not None or disks:
        if paths:
            raise click.UsageError("give PATHs, or --guest/--disk, not both")
        from cpuguard.guest.cli import run_scan

        run_scan(
            guest=guest,
            disks=disks,
            follow_backing=follow_backing,
            all_files=all_files,
            fmt=fmt,
            output=output,
            merge_into=merge_into,
            policies=policies,
            no_cache=no_cache,
            timeout=timeout,
        )
        return
    if not paths:
        raise click.UsageError("give PATHs to scan, or --guest VM, or --disk IMAGE")
    from cpuguard.knowledge import load_knowledge
    from cpuguard.levels import level_features
    from cpuguard.scan.render import render_json, render_text, render_yaml
    from cpuguard.scan.scanner import DefaultCache, scan_paths
    from cpuguard.scan.walk import require_readable

    require_readable(paths)
    if merge_into is not None:
        check_merge_target(merge_into)  # before a long scan
    bar = _Bar() if sys.stderr.isatty() else None
    cache: Path | DefaultCache | None = DefaultCache.DEFAULT
    if no_cache:
        cache = None
    elif cache_dir is not None:
        cache = cache_dir
    try:
        report = scan_paths(list(paths), follow_needed=follow_needed, cache_dir=cache, progress=bar, jobs=jobs)
    finally:
        if bar is not None:
            bar.close()

    if fmt == "json":
        text = render_json(report)
    elif fmt == "yaml":
        text = render_yaml(report)
    else:
        baseline = load_knowledge().x86_64_baseline | level_features("x86-64-v1")
        text = render_text(report, baseline)
    emit(text, output)
    if merge_into is not None and report.scanned:
        count = _merge(report, merge_into)
        click.echo(f"merged {count} binar{'y' if count == 1 else 'ies'} into {merge_into}", err=True)
    if not report.scanned:
        reasons = sorted({f.skipped or "" for f in report.files})
        detail = "; ".join(reasons[:3]) if reasons else "no files found"
        raise BadInput(None, f"nothing could be scanned ({detail})")


COMMANDS = [scan]
