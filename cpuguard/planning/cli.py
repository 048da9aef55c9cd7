"""``cpuguard plan``, ``cpuguard baseline``, ``cpuguard inventory``, ``cpuguard metrics``.

Thin: parse arguments, load the fleet, call the pure planners, render, return
the documented exit code (0 fine, 1 a VM is stranded, 2 bad input or an
incomplete plan -- the report is still written, 3 internal error).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cpuguard.errors import BadInput, UnknownName
from cpuguard.planning.records import Problem
from cpuguard.records import HostFacts, Move

if TYPE_CHECKING:
    from cpuguard.planning.records import ReportMeta

FORMAT_NAMES = ("text", "json", "junit", "markdown", "html")
SUFFIXES = {".txt": "text", ".json": "json", ".xml": "junit", ".md": "markdown", ".html": "html", ".htm": "html"}

#: (kind, format) -> "module:function" of the renderer; imported only when used.
RENDERERS = {
    ("evacuation", "text"): "plan_text:render_evacuation_text",
    ("evacuation", "json"): "plan_json:render_evacuation_json",
    ("evacuation", "junit"): "junit:render_evacuation_junit",
    ("evacuation", "markdown"): "markdown:render_evacuation_markdown",
    ("evacuation", "html"): "html:render_evacuation_html",
    ("matrix", "text"): "plan_text:render_matrix_text",
    ("matrix", "json"): "plan_json:render_matrix_json",
    ("matrix", "junit"): "junit:render_matrix_junit",
    ("matrix", "markdown"): "markdown:render_matrix_markdown",
    ("matrix", "html"): "html:render_matrix_html",
    ("baseline", "text"): "plan_text:render_baseline_text",
    ("baseline", "json"): "plan_json:render_baseline_json",
    ("baseline", "junit"): "junit:render_baseline_junit",
    ("baseline", "markdown"): "markdown:render_baseline_markdown",
    ("baseline", "html"): "html:render_baseline_html",
}


#: Formats whose reports say when, from what and by which cpuguard they were made (ReportMeta).
WITH_META = ("junit", "markdown", "html")


def renderer(kind: str, fmt: str, meta: ReportMeta | None = None) -> Callable[[Any], str]:
    module_name, _, function = RENDERERS[(kind, fmt)].partition(":")
    module = importlib.import_module(f"cpuguard.render.{module_name}")
    render: Callable[..., str] = getattr(module, function)
    if fmt in WITH_META:
        return lambda result: render(result, meta=meta)
    return render


def report_meta(inventory: Path | None, hosts: Mapping[str, HostFacts], host_count: int, vm_count: int) -> ReportMeta:
    """What a report was made from, and now: ``hosts`` the readable hosts (their capture times)."""
    from datetime import UTC, datetime

    from cpuguard import __version__
    from cpuguard.planning.records import ReportMeta

    times = sorted(
        when if when.tzinfo else when.replace(tzinfo=UTC)
        for when in (facts.captured_at for facts in hosts.values())
        if when is not None
    )
    return ReportMeta(
        generated_at=datetime.now(UTC),
        cpuguard_version=__version__,
        inventory=str(inventory) if inventory is not None else None,
        hosts=host_count,
        vms=vm_count,
        captured=(times[0], times[-1]) if times else None,
    )


def report_format(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(f"{s} ({f})" for s, f in SUFFIXES.items())
        raise BadInput(path, f"cannot tell the report format from the file name; use one of {known}")
    return fmt


def emit(kind: str, result: object, fmt: str, reports: Sequence[Path], meta: ReportMeta | None = None) -> None:
    """Print ``result`` in ``fmt`` and write each ``--report`` file (format from its suffix)."""
    from cpuguard.hosts.snapshot import write_atomically

    formats = [report_format(path) for path in reports]  # refuse a bad name before writing anything
    for path, report_fmt in zip(reports, formats, strict=True):
        write_atomically(path, renderer(kind, report_fmt, meta)(result))
    click.echo(renderer(kind, fmt, meta)(result), nl=False)


def _check_reports(_ctx: click.Context, _param: click.Parameter, reports: tuple[Path, ...]) -> tuple[Path, ...]:
    """Refuse a --report whose name or directory is wrong before any work: a report is never the
    reason a directory comes into being (a typo would leave it behind, made by root)."""
    for path in reports:
        report_format(path)
        if not path.parent.is_dir():
            raise BadInput(path, f"directory does not exist: {path.parent}")
    return reports


def _check_output(_ctx: click.Context, _param: click.Parameter, path: Path | None) -> Path | None:
    """As for --report: an output file's directory must exist; it is never created."""
    if path is not None and not path.parent.is_dir():
        raise BadInput(path, f"directory does not exist: {path.parent}")
    return path


def format_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--format", "fmt", type=click.Choice(FORMAT_NAMES), default="text", show_default=True,
        help="Report format on standard output.",
    )(func)  # fmt: skip


def fleet_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--policies, --inventory and --timeout: where a command that reads the whole fleet finds it."""
    options = [
        click.option(
            "--policies", type=click.Path(path_type=Path, file_okay=False), default=None,
            help="Policies directory (inventory.yaml, vms/). Default as for cpuguard check.",
        ),
        click.option(
            "--inventory", type=click.Path(path_type=Path), default=None,
            help="Inventory file, or a directory holding inventory.yaml (e.g. one written by "
            "cpuguard inventory collect). Default: POLICIES/inventory.yaml.",
        ),
        click.option(
            "--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
            help="Seconds to wait for each host given as a libvirt URI.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The planning reports' options: --report, the fleet's (:func:`fleet_options`), --format."""
    func = fleet_options(func)
    func = click.option(
        "--report", "reports", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
        callback=_check_reports,
        help="Also write the report to this file, in the format its suffix names "
        "(.txt, .json, .xml = JUnit, .md, .html). Repeatable.",
    )(func)  # fmt: skip
    return format_option(func)


def _load(policies: Path | None, inventory: Path | None, timeout: float) -> Any:
    from cpuguard.fleet import find_policies_dir
    from cpuguard.knowledge import load_knowledge
    from cpuguard.planning.load import load_fleet

    return load_fleet(find_policies_dir(policies), load_knowledge(), inventory=inventory, timeout=timeout)


def _known_host(fleet: Any, name: str) -> None:
    if name not in fleet.host_entries and not any(p.kind == "host" and p.name == name for p in fleet.problems):
        close = difflib.get_close_matches(name, list(fleet.host_entries), n=3)
        raise UnknownName(fleet.inventory, "host", name, close)


def _extra_host(spec: str) -> HostFacts:
    """A host outside the inventory: any host SOURCE (model:NAME, a file, a URI...)."""
    from cpuguard.hosts.sources import resolve_host
    from cpuguard.knowledge import load_knowledge

    facts = resolve_host(spec, load_knowledge(), name=spec)
    return HostFacts(**{**facts.__dict__, "name": spec})


def _split(values: Sequence[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


@click.group("plan")
def plan() -> None:
    """Plan maintenance: where can the VMs of a host go, and the whole VM x host matrix."""


@plan.command("evacuate")
@click.argument("host")
@click.option(
    "--targets", "targets", multiple=True, metavar="HOST[,HOST...]",
    help="Only these target hosts (repeatable). Inventory names or any host SOURCE, e.g. "
    "model:Icelake-Server for hardware you might buy. Default: every other inventory host.",
)  # fmt: skip
@click.option("--live/--cold", "live", default=True, help="Which rule makes a target safe (default: live).")
@common_options
def evacuate_cmd(
    host: str,
    targets: tuple[str, ...],
    live: bool,
    fmt: str,
    reports: tuple[Path, ...],
    policies: Path | None,
    inventory: Path | None,
    timeout: float,
) -> None:
    """Where can every VM on HOST go? VMs with no safe target first.

    Exit 1 when a VM has no safe target, 2 when the plan is incomplete.
    """
    from cpuguard.hosts.sources import looks_like_source
    from cpuguard.knowledge import load_knowledge
    from cpuguard.planning.plan import evacuate, exit_code

    fleet = _load(policies, inventory, timeout)
    _known_host(fleet, host)
    hosts: dict[str, HostFacts] = dict(fleet.hosts)
    names: list[str] | None = None
    if targets:
        names = []
        for spec in _split(targets):
            if spec not in fleet.host_entries:
                if not looks_like_source(spec):
                    _known_host(fleet, spec)
                hosts[spec] = _extra_host(spec)
            names.append(spec)
    result = evacuate(
        host,
        list(fleet.vms.values()),
        hosts,
        load_knowledge(),
        targets=names,
        move=Move.LIVE if live else Move.COLD,
        problems=fleet.problems,
    )
    named = set(fleet.host_entries) | set(hosts)
    meta = report_meta(fleet.inventory, hosts, len(named), len(fleet.vms))
    emit("evacuation", result, fmt, reports, meta)
    raise SystemExit(exit_code(bool(result.stranded or result.undecided), result.complete))


@plan.command("matrix")
@common_options
def matrix_cmd(
    fmt: str, reports: tuple[Path, ...], policies: Path | None, inventory: Path | None, timeout: float
) -> None:
    """The whole VM x host compatibility matrix, by live and cold rules.

    Exit 1 when some VM has no other host to move to live, 2 when incomplete.
    """
    from cpuguard.knowledge import load_knowledge
    from cpuguard.planning.matrix import compute_matrix
    from cpuguard.planning.plan import exit_code

    fleet = _load(policies, inventory, timeout)
    result = compute_matrix(list(fleet.vms.values()), fleet.hosts, load_knowledge(), problems=fleet.problems)
    meta = report_meta(fleet.inventory, fleet.hosts, len(fleet.host_entries), len(fleet.vms))
    emit("matrix", result, fmt, reports, meta)
    raise SystemExit(exit_code(bool(result.stranded), result.complete))


@click.command("baseline")
@click.argument("hosts", nargs=-1)
@click.option("--cluster", default=None, help="All inventory hosts of this cluster.")
@common_options
def baseline_cmd(
    hosts: tuple[str, ...],
    cluster: str | None,
    fmt: str,
    reports: tuple[Path, ...],
    policies: Path | None,
    inventory: Path | None,
    timeout: float,
) -> None:
    """The guest CPU every one of HOSTS can run: common features, x86-64 level,
    the best libvirt named model and the <cpu> XML to paste into a domain.

    HOSTS are inventory names or any host SOURCE; default: every inventory host.
    Exit 2 when a host could not be read (the baseline of the others is shown).
    """
    from cpuguard.hosts.sources import looks_like_source
    from cpuguard.knowledge import load_knowledge
    from cpuguard.planning.baseline import cluster_baseline

    specs = _split(hosts)
    fleet = None
    if cluster or not specs or not all(looks_like_source(s) for s in specs):
        fleet = _load(policies, inventory, timeout)
    chosen: dict[str, HostFacts] = {}
    wanted: list[str] = []
    if cluster:
        assert fleet is not None
        wanted = sorted(n for n, c in fleet.clusters.items() if c == cluster)
        if not wanted:
            known = sorted(set(fleet.clusters.values()))
            raise UnknownName(fleet.inventory, "cluster", cluster, difflib.get_close_matches(cluster, known, n=3))
    elif not specs and fleet is not None:
        wanted = sorted(fleet.host_entries)
    problems: list[Problem] = []
    for spec in specs:
        if fleet is not None and spec in fleet.host_entries:
            wanted.append(spec)
        elif looks_like_source(spec):
            try:
                chosen[spec] = _extra_host(spec)
            except BadInput as exc:  # as for an inventory host: the baseline of the others, incomplete
                problems.append(Problem("host", spec, exc.line() if exc.where != spec else exc.problem))
        else:
            assert fleet is not None
            _known_host(fleet, spec)
            wanted.append(spec)
    if fleet is not None:
        chosen.update({n: fleet.hosts[n] for n in wanted if n in fleet.hosts})
        problems += [p for p in fleet.problems if p.kind == "host" and p.name in wanted]
    if not chosen and problems:  # nothing to take a baseline of: say why, one line
        raise BadInput(None, "; ".join(p.describe() for p in problems))
    result = cluster_baseline(chosen, load_knowledge(), problems=problems)
    inventory_path = fleet.inventory if fleet is not None else None
    vm_count = len(fleet.vms) if fleet is not None else 0
    meta = report_meta(inventory_path, chosen, len(chosen) + len(problems), vm_count)
    emit("baseline", result, fmt, reports, meta)
    raise SystemExit(2 if problems else 0)


@click.command("metrics")
@click.option(
    "--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None, callback=_check_output,
    help="Write here atomically (e.g. node_exporter's textfile directory, "
    "/var/lib/prometheus/node-exporter/cpuguard.prom) instead of standard output; its directory must exist.",
)  # fmt: skip
@fleet_options
def metrics_cmd(output: Path | None, policies: Path | None, inventory: Path | None, timeout: float) -> None:
    """Prometheus text-format figures: per VM the hosts that could take it live and
    cold, per host its x86-64 level and the age of its facts.

    Exit 0 when written, even if a VM is stranded or an item is unreadable
    (cpuguard_vms_stranded and cpuguard_plan_problems say so; alert on them).
    """
    from datetime import UTC, datetime

    from cpuguard.advice.advise import hosts_after
    from cpuguard.hosts.snapshot import write_atomically
    from cpuguard.knowledge import load_knowledge
    from cpuguard.planning.load import facts_dates
    from cpuguard.planning.matrix import compute_matrix
    from cpuguard.planning.metrics import fleet_figures
    from cpuguard.render.plan_metrics import render_metrics

    fleet = _load(policies, inventory, timeout)
    matrix = compute_matrix(list(fleet.vms.values()), fleet.hosts, load_knowledge(), problems=fleet.problems)
    scanned = {name: vm.policy.guest.scanned_at for name, vm in fleet.vms.items() if vm.policy and vm.policy.guest}
    knowledge = load_knowledge()
    cache: dict[object, tuple[str, ...]] = {}
    after = {name: hosts_after(vm, fleet.hosts, knowledge, cache) for name, vm in fleet.vms.items()}
    figures = fleet_figures(matrix, list(fleet.host_entries), facts_dates(fleet), datetime.now(UTC), scanned, after)
    text = render_metrics(figures)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomically(output, text)


@click.group("inventory")
def inventory() -> None:
    """Gather the fleet inventory: host facts and where each VM runs."""


@inventory.command("collect")
@click.argument("targets", nargs=-1, metavar="[NAME=]URI...")
@click.option(
    "--output",
    "-o",
    "out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory to write inventory.yaml, hosts/, domains/ and collect-report.json into.",
)
@click.option(
    "--from-inventory",
    "source_inventory",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also collect every host this inventory gives as a libvirt URI (hosts: NAME: {uri: ...}).",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="Seconds each host may take."
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=16, show_default=True, help="Hosts collected at the same time."
)
def collect_cmd(
    targets: tuple[str, ...], out: Path, source_inventory: Path | None, timeout: float, workers: int
) -> None:
    """Fetch host facts and domain XML from many libvirt hosts concurrently.

    Each host gets TIMEOUT seconds; an unreachable host is reported and the
    others are still collected. Exit 0 when every host answered, 2 when some
    did not or a VM name conflicts (the files of the others are written).
    """
    import sys
    from datetime import UTC, datetime

    from cpuguard.knowledge import load_knowledge
    from cpuguard.libvirt_api import connect
    from cpuguard.planning.collect import collect, inventory_targets, parse_target
    from cpuguard.planning.concurrency import JobResult

    chosen = [parse_target(t) for t in targets]
    if source_inventory is not None:
        chosen += inventory_targets(source_inventory)
    if not chosen:
        raise click.UsageError("no hosts to collect: give [NAME=]URI arguments or --from-inventory")
    knowledge = load_knowledge()  # before the threads start: loading is not thread-safe work to repeat
    done = 0

    def progress(result: JobResult[Any]) -> None:
        nonlocal done
        done += 1
        if result.timed_out:
            state = f"no answer within {timeout:g} s"
        elif result.error is not None:
            state = f"failed: {result.error}"
        else:
            state = f"ok ({result.seconds:.1f} s)"
        end = "\n" if not sys.stderr.isatty() or done == len(chosen) else ""
        prefix = "\r\x1b[K" if sys.stderr.isatty() else ""
        click.echo(f"{prefix}[{done}/{len(chosen)}] {result.name}: {state}", err=True, nl=False)
        click.echo(end, err=True, nl=False)

    report = collect(
        chosen, out, knowledge, timeout=timeout, workers=workers, connector=connect,
        now=datetime.now(UTC), on_done=progress,
    )  # fmt: skip
    for problem in report.problems:
        click.echo(f"cpuguard: {problem.describe()}", err=True)
    ok = sum(1 for h in report.hosts.values() if h.get("status") == "ok")
    click.echo(f"collected {ok} of {len(chosen)} hosts into {out}", err=True)
    raise SystemExit(2 if report.problems else 0)


@inventory.command("index")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
def index_cmd(directory: Path) -> None:
    """Write DIRECTORY/inventory.yaml from DIRECTORY/hosts/* and DIRECTORY/domains/HOST/*.xml
    (files gathered by other means, e.g. examples/ansible/). Exit 2 on conflicts."""
    from datetime import UTC, datetime

    from cpuguard.planning.collect import index

    report = index(directory, now=datetime.now(UTC))
    for problem in report.problems:
        click.echo(f"cpuguard: {problem.describe()}", err=True)
    raise SystemExit(2 if report.problems else 0)


COMMANDS: list[click.Command] = [plan, baseline_cmd, inventory, metrics_cmd]
