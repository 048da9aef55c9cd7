"""A throwaway cpuguard installation for hook tests: config, policies, snapshot, audit log, cache.

Everything is real: the example fleet's policies, snapshots written by
cpuguard's own writer from libvirt's CPU models, and the hook's real entry.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cpuguard.hook.entry import main
from cpuguard.hosts.snapshot import write_snapshot
from cpuguard.hosts.sources import resolve_host
from cpuguard.knowledge import load_knowledge

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_POLICIES = ROOT / "policies"
DOMAINS = EXAMPLE_POLICIES / "domains"


@dataclass(frozen=True)
class Run:
    exit_code: int
    stderr: str
    stdout: str = ""


def domain_xml(name: str, cpu: str) -> bytes:
    """A minimal domain definition with the given <cpu> element."""
    return (
        f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type></os>{cpu}</domain>"
    ).encode()


def passthrough_xml(name: str) -> bytes:
    return domain_xml(name, "<cpu mode='host-passthrough' check='none'/>")


def model_xml(name: str, model: str) -> bytes:
    return domain_xml(name, f"<cpu mode='custom' match='exact'><model fallback='forbid'>{model}</model></cpu>")


class HookSite:
    """``root/config.yaml`` with policies, a host snapshot and an audit log next to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.yaml"
        self.policies = root / "policies"
        self.snapshot = root / "host.json"
        self.audit_log = root / "audit.jsonl"
        self.cache_dir = root / "cache"

    def install_policies(self, source: Path = EXAMPLE_POLICIES) -> None:
        shutil.copytree(source, self.policies)

    def configure(self, **keys: Any) -> None:
        """Write the config; JSON is YAML, and relative paths resolve next to the file.

        check_permissions is off: pytest's directories are below /tmp, which every user can write.
        """
        settings = {
            "policies": "policies",
            "host_facts": "host.json",
            "audit_log": "audit.jsonl",
            "check_permissions": False,
            **keys,
        }
        self.config.write_text(json.dumps(settings, indent=2) + "\n")

    def snapshot_from(self, source: str, name: str) -> None:
        write_snapshot(resolve_host(source, load_knowledge(), name=name), self.snapshot)

    def options(self, *, cache: bool = True) -> list[str]:
        cache_args = ["--cache-dir", str(self.cache_dir)] if cache else ["--no-cache"]
        # --audit-log: where errors go when the config is unreadable (never the system's log in tests)
        return ["--config", str(self.config), *cache_args, "--audit-log", str(self.audit_log)]

    def hook(
        self,
        vm: str,
        operation: str,
        xml: bytes = b"",
        *extra: str,
        sub: str = "begin",
        cache: bool = True,
        now: datetime | None = None,
    ) -> Run:
        """The hook's entry in this process, as the shim would call it (at ``now``: default, the clock's)."""
        err = io.StringIO()
        code = main(
            [*self.options(cache=cache), *extra, "--", vm, operation, sub, "-"],
            stdin=io.BytesIO(xml),
            stderr=err,
            now=None if now is None else lambda: now,
        )
        return Run(code, err.getvalue())

    def records(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]


def run_shim(shim: Path, vm: str, operation: str, xml: bytes, sub: str = "begin", timeout: float = 60) -> Run:
    """Run an installed shim the way libvirt does: minimal environment, cwd /."""
    env = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    done = subprocess.run(
        [str(shim), vm, operation, sub, "-"], input=xml, capture_output=True, env=env, cwd="/", timeout=timeout
    )
    return Run(done.returncode, done.stderr.decode(), done.stdout.decode())


def run_cpuguard(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m cpuguard ARGS`` in a subprocess, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPUGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "cpuguard", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=cwd,
    )


@dataclass
class Node:
    """One testbed daemon with cpuguard installed; files as this process sees them."""

    name: str  # "a" or "b"
    etc: Path  # the daemon's /etc/cpuguard

    @property
    def config(self) -> Path:
        return self.etc / "config.yaml"

    @property
    def audit_log(self) -> Path:
        return self.etc / "audit.jsonl"

    def configure(self, **keys: Any) -> None:
        settings = {
            "policies": "policies",
            "host_facts": "host.json",
            "audit_log": "audit.jsonl",
            "host_name": f"node-{self.name}",
            "check_permissions": False,  # the testbed lives below /tmp, which every user can write
            **keys,
        }
        self.config.write_text(json.dumps(settings, indent=2) + "\n")

    def records(self, vm: str | None = None) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        records = [json.loads(line) for line in self.audit_log.read_text().splitlines()]
        return [r for r in records if vm is None or r["vm"] == vm]
