"""``cpuguard hook install`` / ``uninstall``: put the shim into libvirt's hook directory.

libvirt (>= 6.5) runs every executable in ``/etc/libvirt/hooks/qemu.d/`` as
well as ``/etc/libvirt/hooks/qemu``; cpuguard installs ``qemu.d/cpuguard`` and
leaves any other hook alone. libvirt looks for hooks only when it starts or
reloads, so a new hook needs a reload (SIGHUP, ``systemctl reload``).
Idempotent: running it again changes nothing, or updates only cpuguard's files.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cpuguard.config import DEFAULT_CONFIG, Config, read_config
from cpuguard.errors import BadInput
from cpuguard.hook import shim
from cpuguard.hook.cache import DEFAULT_CACHE_DIR
from cpuguard.hosts.snapshot import write_atomically
from cpuguard.records import HostFacts

DEFAULT_HOOKS_DIR = Path("/etc/libvirt/hooks/qemu.d")
HOOK_NAME = "cpuguard"
#: Where the libvirt daemons that run qemu hooks keep their pid (modular virtqemud, monolithic libvirtd).
DAEMON_PIDFILES = (Path("/run/libvirt/virtqemud.pid"), Path("/run/libvirtd.pid"), Path("/run/libvirt/libvirtd.pid"))

CONFIG_TEMPLATE = """\
# cpuguard configuration (docs/config.md). Relative paths are relative to this file.
policies: {policies}
host_facts: {host_facts}
audit_log: {audit_log}
# enforce: block moves the host cannot run; warn: allow them, but log and say why
mode: enforce
# when cpuguard itself fails: block a live migration or restore (the VM keeps
# running where it is), allow a start (a guard bug must not become an outage)
on_error:
  migrate: block
  restore: block
  start: allow
"""


@dataclass
class Report:
    """What install/uninstall did, one line each, and whether libvirt must reload to notice."""

    done: list[str] = field(default_factory=list)
    needs_reload: bool = False
    warnings: list[str] = field(default_factory=list)  # loud, but not a reason to refuse


def absolute(path: Path) -> Path:
    """``path`` from the current directory, without resolving symbolic links (the trust check follows them)."""
    return Path(os.path.abspath(path))


def hook_path(hooks_dir: Path) -> Path:
    return hooks_dir / HOOK_NAME


def shim_settings(config_path: Path, config: Config, cache_dir: Path) -> dict[str, str]:
    exit_for = {"block": "1", "allow": "0"}
    return {
        "python": os.path.abspath(sys.executable),
        "python_path": os.pathsep.join(shim.python_path()),
        "config": str(config_path),
        "cache_dir": str(cache_dir),
        "audit_log": str(config.audit_log),
        "deadline": deadline_text(config.deadline_seconds),
        "on_error_migrate": exit_for[config.on_error["migrate"]],
        "on_error_restore": exit_for[config.on_error["restore"]],
        "on_error_start": exit_for[config.on_error["start"]],
    }


def deadline_text(seconds: float) -> str:
    """deadline_seconds as the shim passes it (``--deadline``): the limit until the config is read."""
    return f"{seconds:g}"


def write_default_config(path: Path) -> None:
    """cpuguard's defaults; a configuration outside /etc/cpuguard keeps its files next to itself."""
    if path == DEFAULT_CONFIG:
        defaults = Config(None)
        paths = {"policies": defaults.policies, "host_facts": defaults.host_facts, "audit_log": defaults.audit_log}
    else:
        paths = {"policies": Path("policies"), "host_facts": Path("host.json"), "audit_log": Path("audit.jsonl")}
    write_atomically(path, CONFIG_TEMPLATE.format(**paths), mode=0o644)


def local_snapshot(name: str | None) -> HostFacts:
    """This host's facts, through libvirt when it answers (install runs outside the hook)."""
    from cpuguard.hosts.sources import local_host
    from cpuguard.knowledge import load_knowledge

    facts = local_host(load_knowledge(), name=name or "")
    return facts if facts.captured_at else HostFacts(**{**facts.__dict__, "captured_at": datetime.now(UTC)})


def install(
    hooks_dir: Path = DEFAULT_HOOKS_DIR,
    config_path: Path = DEFAULT_CONFIG,
    cache_dir: Path = Path(DEFAULT_CACHE_DIR),
    *,
    snapshot: Callable[[str | None], HostFacts] = local_snapshot,
    template: Path | None = None,
) -> Report:
    """Install the shim, and a config and a first host snapshot where there are none.

    ``template`` the shim template (default: the one installed with cpuguard).
    Everything that can refuse the installation is checked before anything is written.
    """
    from cpuguard.hosts.snapshot import write_snapshot

    # libvirt runs hooks with / as the working directory: every path the shim keeps must be absolute.
    hooks_dir, config_path, cache_dir = (absolute(p) for p in (hooks_dir, config_path, cache_dir))
    report = Report()
    target = hook_path(hooks_dir)
    existing = _read_if_exists(target)
    if existing is not None and not shim.is_ours(existing):
        raise BadInput(target, "exists and is not cpuguard's hook; not touching it (move it, or install elsewhere)")
    if hooks_dir.exists() and not hooks_dir.is_dir():
        raise BadInput(hooks_dir, "is not a directory")
    template_text = shim.read_template(template)
    config = read_config(config_path, required=True) if config_path.exists() else None

    if config is None:
        write_default_config(config_path)
        report.done.append(f"wrote {config_path} (defaults; see docs/config.md)")
        config = read_config(config_path, required=True)

    if not config.host_facts.exists():
        facts = snapshot(config.host_name)
        write_snapshot(facts, config.host_facts)
        report.done.append(
            f"wrote host snapshot {config.host_facts} from {facts.source} "
            "(refresh it when hardware, microcode or kernel options change: docs/hook.md)"
        )

    if not config.policies.is_dir():
        report.done.append(
            f"no policies directory {config.policies} yet: put VM policies in {config.policies / 'vms'}/ "
            "and the inventory in inventory.yaml there (README, 'Policies and the inventory')"
        )
    settings = shim_settings(config_path, config, cache_dir)
    report.warnings += code_warnings(settings)
    text = shim.render(settings, template_text)
    if existing == text and os.access(target, os.X_OK):
        report.done.append(f"{target} is up to date")
        return report
    hooks_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    write_atomically(target, text, mode=0o755)
    if existing is None:
        report.done.append(f"installed {target}")
        report.needs_reload = True
    else:
        report.done.append(f"updated {target}")
    return report


def code_warnings(settings: dict[str, str]) -> list[str]:
    """The hook runs as root: say so when others could change the code it runs (cpuguard.hook.codetrust)."""
    from cpuguard.hook.codetrust import code_problems

    entries = [e for e in settings["python_path"].split(os.pathsep) if e]
    return [
        f"the hook would run code others can change: {problem}; anyone who can write there can run code as root "
        "at the next VM start (install cpuguard where only root can write)"
        for problem in code_problems(settings["python"], entries)
    ]


def uninstall(hooks_dir: Path = DEFAULT_HOOKS_DIR) -> Report:
    """Remove cpuguard's shim (only ours); configuration, snapshot and audit log stay."""
    report = Report()
    target = hook_path(hooks_dir)
    existing = _read_if_exists(target)
    if existing is None:
        report.done.append(f"{target} is not installed")
        return report
    if not shim.is_ours(existing):
        raise BadInput(target, "is not cpuguard's hook; not removing it")
    target.unlink()
    report.done.append(f"removed {target} (configuration, host snapshot and audit log are kept)")
    return report


def reload_libvirt(pidfiles: Sequence[Path] = DAEMON_PIDFILES) -> str:
    """SIGHUP the libvirt daemon so it looks for hooks again; says which one."""
    for pidfile in pidfiles:
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError):
            continue
        return f"reloaded libvirt (SIGHUP to pid {pid} from {pidfile})"
    raise BadInput(
        None,
        f"no running libvirt daemon found ({', '.join(map(str, pidfiles))}); "
        "reload it yourself: systemctl reload virtqemud (or libvirtd)",
    )


def _read_if_exists(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise BadInput(path, "is a directory, not a hook script") from None
