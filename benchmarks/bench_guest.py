"""Benchmark: reading a guest's disk, cpuguard next to virt-inspector on the same image.

Builds the guest images of the run first: a real Debian 12 minbase from
debootstrap (``--assembled``: a small Debian made of this machine's own
packages, no network), with a program compiled with ``gcc -march=haswell``
installed by hand as /usr/sbin/pbxd (its own library found by RUNPATH, two
plugins) and an enabled systemd unit running it; ext4 in a GPT partition,
converted to qcow2. ``--guests K`` images hold the same tree, each file system
made on its own (its own UUID and label, as separately installed VMs have).
Then, ``--runs`` times, interleaved so that other work on the machine slows
every measurement alike:

* ``virt-inspector -a IMAGE`` (libguestfs' own inspection: the OS, its file
  systems, its installed packages): the anchor;
* ``cpuguard scan --guest DOMAIN.xml --no-cache``: a first scan, caches cold;
* ``cpuguard scan --guest DOMAIN.xml`` twice with one new cache directory: the
  first read (which stores its result), then the rescan of the unchanged guest;
* ``cpuguard inventory scan-guests --workers 1 --rescan`` over 1 guest and
  over K guests, one appliance: (T_K - T_1) / (K - 1) is what one more guest
  costs.

Before them one first scan is profiled in a process of its own (the appliance's
first launch of the run, so also its warm-up): the worker's steps run there
with a libguestfs handle that times every call, and each call is put down to
the step it was made in.

    LIBGUESTFS_BACKEND=direct .venv/bin/python benchmarks/bench_guest.py [--runs N] [--guests K] [--json FILE]

``--tcg`` sets LIBGUESTFS_BACKEND=direct and LIBGUESTFS_BACKEND_SETTINGS=force_tcg
for every run (machines where the appliance cannot use KVM). Targets (issue 9):
a first scan no slower than virt-inspector while it also scans the binaries;
a rescan of an unchanged guest <= 10% of the first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = "/usr/sbin/pbxd"
CPUGUARD = [sys.executable, "-m", "cpuguard"]
TCG = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
FIRST_TARGET = 1.0  # x virt-inspector
RESCAN_TARGET = 0.10  # of the first scan
TOOLS = ("virt-inspector", "qemu-img", "mke2fs", "sfdisk", "gcc")

# -------------------------------------------------------------------------- images


def build_images(work: Path, guests: int, assembled: bool) -> dict[str, Any]:
    """The guest root, then one qcow2 per guest; what was built, as plain data."""
    sys.path.insert(0, str(ROOT))
    from tests.guest import images

    started = time.perf_counter()
    tree = work / "root"
    root = images.assembled_debian_root(tree) if assembled else images.debian_root(tree)
    root = images.add_custom_program(root, PROGRAM, march="haswell", library="runpath", plugins=2)
    built = time.perf_counter()
    disks = []
    (work / "images").mkdir()
    for index in range(guests):
        # every guest its own label in its own fstab: file systems of clones that share a
        # label or UUID are told apart by libguestfs only in separate appliances
        label = f"guest{index}"
        (tree / "etc" / "fstab").write_text(f"LABEL={label} / auto defaults 0 1\n")
        raw = images.ext4_disk(root, work / "images" / f"guest-{index}.raw", table="gpt", label=label)
        disk = images.qcow2_of(raw, work / "images" / f"guest-{index}.qcow2")
        raw.path.unlink()
        disks.append(str(disk.path))
    shutil.rmtree(tree, ignore_errors=True)
    return {
        "root": "Debian minbase (debootstrap)" if not assembled else "Debian assembled from this machine's packages",
        "os": root.pretty_name,
        "packages": len(root.packages),
        "program": f"{PROGRAM} (-march=haswell, own library by RUNPATH, 2 plugins, enabled unit)",
        "layout": "ext4 in GPT partition 2, qcow2",
        "qcow2_bytes": os.path.getsize(disks[0]),
        "disks": disks,
        "root_seconds": round(built - started, 1),
        "disks_seconds": round(time.perf_counter() - built, 1),
    }


def write_policies(work: Path, disks: Sequence[str]) -> tuple[Path, list[str]]:
    """A policy directory whose inventory holds one VM per image, each with its domain XML."""
    from tests.guest import images

    policies = work / "policies"
    (policies / "domains").mkdir(parents=True)
    lines = ["hosts:", "  bench-host: {source: 'uarch:haswell'}", "vms:"]
    vms = []
    for index, image in enumerate(disks):
        vm = f"guest-{index}"
        (policies / "domains" / f"{vm}.xml").write_text(images.domain_xml(vm, image))
        lines.append(f"  {vm}: {{host: bench-host, domain: domains/{vm}.xml}}")
        vms.append(vm)
    (policies / "inventory.yaml").write_text("\n".join(lines) + "\n")
    return policies, vms


# -------------------------------------------------------------------------- the profile phase


#: The worker's steps, innermost first: a libguestfs call is put down to the first of
#: these functions found on the stack when it is made.
STEPS = (
    ("stage", "copying the chosen files out"),
    ("close_over_needed", "library closure (DT_NEEDED in the guest)"),
    ("choose_units", "enabled units and their programs"),
    ("choose_unowned", "listing executable places, unowned files"),
    ("owned", "package database (dpkg lists)"),
    ("_os_of", "os-release and the OS floor"),
    ("_mount", "mounting the root read-only"),
    ("inspect_guest", "the worker's other calls (umount, OS type)"),
    ("Inside", "mounting the root read-only"),  # __init__: reads the merged-/usr links
    ("assign_roots", "inspect_os: finding the OS"),
    ("Appliance", "appliance launch"),  # __init__: add_drive_opts, launch
    ("profile", "appliance shutdown"),  # below: shutdown, close
)

#: Steps outside worker.inspect_guest (timed as walls of their own).
OUTSIDE_READING = ("appliance launch", "inspect_os: finding the OS", "appliance shutdown")


def _step_of(frame: Any) -> str:
    names = dict(STEPS)
    while frame is not None:
        name = frame.f_code.co_name
        if name == "__init__":
            name = type(frame.f_locals.get("self")).__name__
        if name in names:
            return names[name]
        frame = frame.f_back
    return "other calls of the worker"


class TimedHandle:
    """A libguestfs handle that adds the time of every call to its step and its method."""

    def __init__(self, handle: Any, steps: dict[str, list[float]], methods: dict[str, list[float]]) -> None:
        self._handle = handle
        self._steps = steps
        self._methods = methods

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._handle, name)
        if not callable(method):
            return method

        def timed(*args: Any, **kwargs: Any) -> Any:
            step = _step_of(sys._getframe(1))
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                took = time.perf_counter() - started
                for table, key in ((self._steps, step), (self._methods, name)):
                    entry = table.setdefault(key, [0, 0.0])
                    entry[0] += 1
                    entry[1] += took

        return timed


def profile(image: str) -> dict[str, Any]:
    """One first scan of ``image`` in this process, its time put down to the worker's steps."""
    from cpuguard.guest import worker
    from cpuguard.scan import scan_paths

    guestfs = worker.import_guestfs()
    if guestfs is None:
        raise SystemExit("libguestfs is not installed (Debian package python3-guestfs)")
    steps: dict[str, list[float]] = {}
    methods: dict[str, list[float]] = {}

    class TimedModule:
        @staticmethod
        def GuestFS(**kwargs: Any) -> TimedHandle:
            return TimedHandle(guestfs.GuestFS(**kwargs), steps, methods)

    walls: dict[str, float] = {}
    started = time.perf_counter()
    guests = [{"vm": "g", "disks": [{"target": "vda", "path": image, "format": "qcow2"}]}]
    appliance = worker.Appliance(TimedModule, guests)
    walls["launch"] = time.perf_counter() - started
    mark = time.perf_counter()
    appliance.assign_roots()
    walls["inspect_os"] = time.perf_counter() - mark
    with tempfile.TemporaryDirectory(prefix="cpuguard-bench-staging-") as staging:
        mark = time.perf_counter()
        result = worker.inspect_guest(appliance, "g", staging)
        walls["inspect_guest"] = time.perf_counter() - mark
        staged = [Path(f["staged"]) for f in result.get("files", []) if f.get("staged")]
        staged_bytes = sum(path.stat().st_size for path in staged)
        with tempfile.TemporaryDirectory(prefix="cpuguard-bench-cache-") as cache:
            mark = time.perf_counter()
            scan_paths(staged, cache_dir=Path(cache), library_dirs=[])
            walls["scan"] = time.perf_counter() - mark
    mark = time.perf_counter()
    appliance.g.shutdown()
    appliance.g.close()
    walls["shutdown"] = time.perf_counter() - mark
    walls["total"] = time.perf_counter() - started
    if result.get("status") != "ok" or PROGRAM not in {f["path"] for f in result.get("files", [])}:
        raise SystemExit(f"the profiled scan did not find {PROGRAM}: {json.dumps(result)[:500]}")
    guest_calls = sum(seconds for name, (_n, seconds) in steps.items() if name not in OUTSIDE_READING)
    return {
        "walls": walls,
        "steps": {name: {"calls": int(n), "seconds": seconds} for name, (n, seconds) in steps.items()},
        "methods": {name: {"calls": int(n), "seconds": seconds} for name, (n, seconds) in methods.items()},
        "worker_python_seconds": walls["inspect_guest"] - guest_calls,
        "files": len(result["files"]),
        "staged_bytes": staged_bytes,
    }


# -------------------------------------------------------------------------- measurements


def timed(command: Sequence[str | Path], env: Mapping[str, str], check: Callable[[str], bool] | None = None) -> float:
    """Wall seconds of one command; a failure (or ``check`` false on its stdout) ends the benchmark."""
    started = time.perf_counter()
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=dict(env), check=False)
    took = time.perf_counter() - started
    if done.returncode != 0 or (check is not None and not check(done.stdout)):
        tail = (done.stderr or done.stdout).strip()[-1500:]
        raise SystemExit(f"{' '.join(map(str, command))} failed ({done.returncode}):\n{tail}")
    return took


def finds_program(stdout: str) -> bool:
    data = json.loads(stdout)
    needs = {r["feature"] for b in data["binaries"] if b["path"] == PROGRAM for r in b["required"]}
    return "avx2" in needs


def summary(samples: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(samples), "min": min(samples), "samples": [round(s, 2) for s in samples]}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(args: argparse.Namespace, work: Path, image: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    policies, vms = write_policies(work, image["disks"])
    first_domain = policies / "domains" / f"{vms[0]}.xml"
    counter = iter(range(1_000_000))

    def fresh_cache() -> dict[str, str]:
        cache = work / f"cache-{next(counter)}"
        cache.mkdir()
        return {**env, "XDG_CACHE_HOME": str(cache)}

    # an empty policy directory: scan --guest would reuse what scan-guests stored there
    (work / "no-policies").mkdir()
    scan: list[str | Path] = [*CPUGUARD, "scan", "--guest", first_domain, "--policies", work / "no-policies"]
    scan_guests: list[str | Path] = [*CPUGUARD, "inventory", "scan-guests", "--policies", policies]
    scan_guests += ["--workers", "1", "--rescan"]
    cases: dict[str, Callable[[], float]] = {
        "virt-inspector": lambda: timed(["virt-inspector", "--format=qcow2", "-a", image["disks"][0]], env),
        "first scan, --no-cache": lambda: timed([*scan, "--no-cache", "--format=json"], fresh_cache(), finds_program),
    }
    rescans: list[float] = []

    def first_then_rescan() -> float:
        cache = fresh_cache()
        first = timed(scan, cache, lambda out: f"{PROGRAM} (" in out)
        rescans.append(timed(scan, cache, lambda out: "unchanged since" in out))
        return first

    cases["first scan, cache written"] = first_then_rescan
    cases["scan-guests, 1 guest"] = lambda: timed([*scan_guests, vms[0]], fresh_cache())
    cases[f"scan-guests, {len(vms)} guests"] = lambda: timed([*scan_guests, *vms], fresh_cache())
    samples: dict[str, list[float]] = {name: [] for name in cases}
    loads = []
    for run in range(args.runs):
        loads.append(loadavg())
        for name, case in cases.items():
            samples[name].append(case())
            print(f"  run {run + 1}/{args.runs}: {name} {samples[name][-1]:.1f} s", file=sys.stderr)
    samples["rescan, unchanged"] = rescans
    for vm in vms:
        if not (policies / "guests" / f"{vm}.json").is_file():
            raise SystemExit(f"scan-guests stored no result for {vm}")
    return {"seconds": {name: summary(values) for name, values in samples.items()}, "loads": loads}


def startups(env: Mapping[str, str]) -> dict[str, float]:
    """Median wall of the two interpreters a scan starts: the CLI and the appliance worker."""
    cli = [timed([*CPUGUARD, "scan", "--help"], env) for _ in range(3)]
    worker = [timed([sys.executable, "-c", "import cpuguard.guest.worker"], env) for _ in range(3)]
    return {"cli": statistics.median(cli), "worker": statistics.median(worker)}


# -------------------------------------------------------------------------- report


def _load(values: Sequence[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def report(figures: dict[str, Any]) -> None:
    image, seconds, k = figures["image"], figures["seconds"], figures["guests"]
    print(f"guest image: {image['os']}, {image['root']}, {image['packages']} packages;")
    print(f"  {image['program']}; {image['layout']}, {image['qcow2_bytes'] / 2**20:.0f} MiB; {k} such images")
    print(f"libguestfs: {figures['backend']}; {figures['runs']} interleaved runs, medians; {figures['cpus']} CPUs")
    print(f"load average before: {_load(figures['load_before'])}, after: {_load(figures['load_after'])}")
    ratios = figures["ratios"]
    anchor = seconds["virt-inspector"]["median"]
    stored = seconds["first scan, cache written"]["median"]
    rows = [
        ("virt-inspector -a IMAGE", "virt-inspector", "the anchor"),
        ("scan --guest --no-cache (first scan)", "first scan, --no-cache", f"{ratios['first_vs_virt_inspector']:.2f}x"),
        ("scan --guest, first (stores its result)", "first scan, cache written", f"{stored / anchor:.2f}x"),
        ("scan --guest again, guest unchanged", "rescan, unchanged", f"{ratios['rescan_vs_first']:.1%} of first"),
        ("scan-guests --workers 1, 1 guest", "scan-guests, 1 guest", "T_1"),
        (f"scan-guests --workers 1, {k} guests", f"scan-guests, {k} guests", f"T_{k}"),
    ]
    print(f"{'':42} {'median s':>9} {'min s':>7}  vs virt-inspector")
    for label, key, note in rows:
        print(f"{label:42} {seconds[key]['median']:9.2f} {seconds[key]['min']:7.2f}  {note}")
    marginal, share_of_one = ratios["marginal_seconds"], ratios["marginal_vs_one_guest"]
    print(f"{'one more guest, (T_K - T_1)/(K - 1)':42} {marginal:9.2f} {'':7}  {share_of_one:.2f}x T_1")
    first = ratios["first_vs_virt_inspector"]
    print(f"target: first scan <= {FIRST_TARGET:g}x virt-inspector: {'met' if first <= FIRST_TARGET else 'NOT met'}")
    share = ratios["rescan_vs_first"]
    print(f"target: rescan <= {RESCAN_TARGET:.0%} of the first: {'met' if share <= RESCAN_TARGET else 'NOT met'}")

    prof = figures["profile"]
    walls = prof["walls"]
    print(f"\nwhere a first scan's time goes (one scan profiled in-process, load {_load(prof['load'])}):")
    lines = [
        ("interpreter start-up, CLI + worker", figures["startup"]["cli"] + figures["startup"]["worker"], ""),
        ("appliance launch", walls["launch"], ""),
        ("inspect_os: finding the OS", walls["inspect_os"], ""),
        ("reading the guest (worker.inspect_guest)", walls["inspect_guest"], ""),
    ]
    inside = [(name, step) for name, step in prof["steps"].items() if name not in OUTSIDE_READING]
    for name, step in sorted(inside, key=lambda item: -item[1]["seconds"]):
        lines.append((f"  {name}", step["seconds"], f"{step['calls']} libguestfs calls"))
    lines.append(("  the worker's own Python (dpkg lists, ELF links)", prof["worker_python_seconds"], ""))
    staged = f"{prof['files']} files, {prof['staged_bytes'] / 2**20:.1f} MiB"
    lines.append(("scanning the copied-out files, cache cold", walls["scan"], staged))
    lines.append(("appliance shutdown", walls["shutdown"], ""))
    total = sum(took for label, took, _note in lines if not label.startswith("  "))
    for label, took, note in lines:
        print(f"{label:52} {took:7.2f} s {took / total:6.1%}  {note}")
    print(f"{'total':52} {total:7.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each measurement (median)")
    parser.add_argument("--guests", type=int, default=6, help="K: guests one appliance carries")
    parser.add_argument("--assembled", action="store_true", help="no debootstrap: a Debian of this machine's packages")
    parser.add_argument("--tcg", action="store_true", help="LIBGUESTFS_BACKEND=direct, force_tcg for every run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", help=argparse.SUPPRESS)  # an image: print its profile as JSON
    args = parser.parse_args(argv)
    if args.profile:
        print(json.dumps(profile(args.profile)))
        return 0
    if args.runs < 1 or args.guests < 2:
        parser.error("--runs >= 1 and --guests >= 2")
    missing = [tool for tool in (*TOOLS, *([] if args.assembled else ["debootstrap"])) if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (scripts/install --test installs them)")
    env = {**os.environ, **(TCG if args.tcg else {})}
    backend = ", ".join(f"{k}={env[k]}" for k in TCG if env.get(k)) or "libguestfs default"
    with tempfile.TemporaryDirectory(prefix="cpuguard-bench-guest-") as top:
        work = Path(top)
        print("building the guest images...", file=sys.stderr)
        image = build_images(work, args.guests, args.assembled)
        load_before = loadavg()
        print("profiling one first scan (also the appliance's warm-up)...", file=sys.stderr)
        load = loadavg()
        command = [sys.executable, __file__, "--profile", image["disks"][0]]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"profile failed: {done.stderr.strip()[-1500:]}")
        prof = {**json.loads(done.stdout), "load": load}
        startup = startups(env)
        measured = measure(args, work, image, env)
        load_after = loadavg()
    figures = {
        "image": {k: v for k, v in image.items() if k != "disks"},
        "backend": backend,
        "runs": args.runs,
        "guests": args.guests,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_after,
        "loads_per_run": measured["loads"],
        "seconds": measured["seconds"],
        "startup": startup,
        "profile": prof,
    }
    seconds = figures["seconds"]
    anchor = seconds["virt-inspector"]["median"]
    one, many = seconds["scan-guests, 1 guest"]["median"], seconds[f"scan-guests, {args.guests} guests"]["median"]
    figures["ratios"] = {
        "first_vs_virt_inspector": seconds["first scan, --no-cache"]["median"] / anchor,
        "rescan_vs_first": seconds["rescan, unchanged"]["median"] / seconds["first scan, cache written"]["median"],
        "marginal_seconds": (many - one) / (args.guests - 1),
        "marginal_vs_one_guest": (many - one) / (args.guests - 1) / one,
    }
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
