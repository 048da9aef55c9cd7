"""Benchmark: the libvirt hook's decision time next to ``virsh hypervisor-cpu-compare``.

Runs the installed shim (cpuguard hook install) the way libvirt does -- minimal
environment, cwd /, the domain XML on stdin, ``migrate begin`` -- and, in the
same loop, ``virsh hypervisor-cpu-compare`` of the same domain's CPU against a
running libvirt daemon. Reports median, 90th percentile and minimum wall
times of:

* the hook's first decision for a VM: each run a VM it has never decided for
  (``db01-000``, ``db01-001``, ... each with a copy of db01's policy and
  domain), as when a host that has come back up starts all its VMs; the
  precompiled context is current (written by the first call of the warm-up),
* the same decision repeated (``db01-000`` again and again),
* a decision after an input changed: the precompiled context rebuilt
  (cache removed before each run; fewer runs),
* ``python -I -S -c pass``, the interpreter's own start-up (the floor).

    .venv/bin/python benchmarks/bench_hook.py [--uri URI | --testbed] [--runs N] [--domain FILE] [--after-reboot]

``--after-reboot`` gives the host a snapshot captured an hour before the last boot: the case of a host
that has just rebooted and starts its VMs before the snapshot is refreshed (every answer then carries
the stale-snapshot warning).

``--testbed`` starts scripts/testbed's node-a for the run (root). Targets
(issue 13): a first decision no slower than 3x virsh, a repeated one no
slower than 1.5x, in the same run.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpuguard.hook.entry import boot_time

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DOMAIN = ROOT / "policies" / "domains" / "db01.xml"
LIBVIRT_ENV = {"LC_ALL": "C", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
FIRST, REPEATED, REBUILT = "hook, first decision for a VM", "hook, the same decision repeated", "hook, context rebuilt"
TARGETS = {FIRST: 3.0, REPEATED: 1.5}


def timed(cmd: list[str], stdin: bytes = b"") -> float:
    start = time.perf_counter()
    subprocess.run(cmd, input=stdin, capture_output=True, env=LIBVIRT_ENV, cwd="/", check=False)
    return (time.perf_counter() - start) * 1000


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))],
        "min": ordered[0],
        "runs": len(ordered),
    }


@contextmanager
def testbed_uri() -> Iterator[str]:
    loader = importlib.machinery.SourceFileLoader("cpuguard_testbed_script", str(ROOT / "scripts" / "testbed"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    loader.exec_module(module)
    state = Path(tempfile.mkdtemp(prefix="cpuguard-bench-testbed-"))
    bed = module.Testbed(state, 24600, cache_dir=Path(tempfile.gettempdir(), "cpuguard-testbed-cache"))
    bed.start()
    try:
        yield str(bed.uri_a)
    finally:
        bed.stop()
        shutil.rmtree(state, ignore_errors=True)


def install_site(root: Path, vms: int, *, after_reboot: bool = False) -> Path:
    """A config with the example fleet's policies on a Westmere host, ``vms`` copies of db01's policy
    (db01-000, ...); the installed shim."""
    from cpuguard.hook.cache import RACY_SECONDS
    from cpuguard.hook.install import hook_path, install
    from cpuguard.hosts.snapshot import write_snapshot
    from cpuguard.hosts.synthetic import model_host
    from cpuguard.knowledge import load_knowledge

    etc = root / "etc"
    shutil.copytree(ROOT / "policies", etc / "policies")
    policy = (etc / "policies" / "vms" / "db01.yaml").read_text()
    for number in range(vms):
        (etc / "policies" / "vms" / f"db01-{number:03d}.yaml").write_text(policy.replace("db01", f"db01-{number:03d}"))
    # check_permissions: false -- this lives below /tmp, which every user can write
    config = "policies: policies\nhost_facts: host.json\naudit_log: audit.jsonl\ncheck_permissions: false\n"
    (etc / "config.yaml").write_text(config)
    facts = model_host("Westmere", load_knowledge(), "old-node")
    if after_reboot:
        booted = boot_time("/proc/stat")
        if booted is None:
            raise SystemExit("--after-reboot: no btime in /proc/stat")
        facts = replace(facts, captured_at=datetime.fromtimestamp(booted - 3600, UTC))
    write_snapshot(facts, etc / "host.json")
    install(root / "hooks", etc / "config.yaml", root / "cache")  # host.json exists: no snapshot taken
    time.sleep(RACY_SECONDS + 0.5)  # inputs this young are never cached (cpuguard/hook/cache.py)
    return hook_path(root / "hooks")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--uri", default="qemu:///system", help="libvirt daemon for virsh (default qemu:///system)")
    where.add_argument("--testbed", action="store_true", help="start scripts/testbed's node-a for the run")
    parser.add_argument("--runs", type=int, default=41)
    parser.add_argument("--cold-runs", type=int, default=7)
    parser.add_argument("--domain", type=Path, default=DEFAULT_DOMAIN, help="domain XML (default: example db01)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--after-reboot", action="store_true", help="a snapshot captured before the last boot")
    args = parser.parse_args(argv)

    xml = args.domain.read_bytes()
    vm = args.domain.stem
    with (
        tempfile.TemporaryDirectory(prefix="cpuguard-bench-hook-") as tmp,
        testbed_uri() if args.testbed else contextmanager(lambda: iter([args.uri]))() as uri,
    ):
        root = Path(tmp)
        shim = install_site(root, args.runs + 1, after_reboot=args.after_reboot)
        virsh = ["virsh", "-c", uri, "hypervisor-cpu-compare", str(args.domain)]
        check = subprocess.run(virsh, capture_output=True, text=True, check=False)
        if "error" in check.stderr.lower():
            raise SystemExit(f"virsh cannot compare against {uri}: {check.stderr.strip()}")

        def hook(name: str) -> float:
            return timed(
                [str(shim), name, "migrate", "begin", "-"], xml.replace(f">{vm}<".encode(), f">{name}<".encode())
            )

        first = iter(f"{vm}-{number:03d}" for number in range(1, args.runs + 1))
        cases: dict[str, Callable[[], float]] = {
            "virsh hypervisor-cpu-compare": lambda: timed(virsh),
            FIRST: lambda: hook(next(first)),
            REPEATED: lambda: hook(f"{vm}-000"),
            "python -I -S -c pass": lambda: timed([sys.executable, "-I", "-S", "-c", "pass"]),
        }
        for name, run in cases.items():  # warm-up: page cache, the precompiled context (written here)
            if name != FIRST:
                run()
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, run in cases.items():
                samples[name].append(run())
        rebuilt = []
        for _ in range(args.cold_runs):
            shutil.rmtree(root / "cache", ignore_errors=True)
            rebuilt.append(hook(f"{vm}-000"))
        samples[REBUILT] = rebuilt
        records = [json.loads(line) for line in (root / "etc" / "audit.jsonl").read_text().splitlines()]

    figures = {name: summary(values) for name, values in samples.items()}
    base = figures["virsh hypervisor-cpu-compare"]["median"]
    print(f"hook benchmark: {vm} 'migrate begin' ({args.domain}), virsh against {uri}, {args.runs} interleaved runs")
    if args.after_reboot:
        print("snapshot captured before the last boot (as after a reboot): every answer warns it is stale")
    print(f"{'':36} {'median':>8} {'p90':>8} {'min':>8}  ms")
    for name, fig in figures.items():
        versus = f"  {fig['median'] / base:.2f}x virsh" if name.startswith("hook") else ""
        print(f"{name:36} {fig['median']:8.1f} {fig['p90']:8.1f} {fig['min']:8.1f}{versus}")
    verdicts = sorted({(r["verdict"], r["decision"]) for r in records})
    print(f"{len(records)} decisions logged, verdicts {verdicts}")
    for name, target in TARGETS.items():
        ratio = figures[name]["median"] / base
        print(f"target <= {target}x virsh, {name}: {'met' if ratio <= target else 'NOT met'} ({ratio:.2f}x)")
    if args.json:
        result: dict[str, Any] = {"uri": uri, "domain": str(args.domain), "after_reboot": args.after_reboot}
        result["figures_ms"] = figures
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
