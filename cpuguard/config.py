"""cpuguard's configuration file, ``/etc/cpuguard/config.yaml`` (docs/config.md).

Keys (an interface; schema in data/schema-config.json):

``policies``     directory with inventory.yaml and vms/<vm>.yaml
``host_facts``   this host's snapshot file (written by ``cpuguard host snapshot``)
``host_name``    name of this host in reports (default: the hostname)
``audit_log``    JSON-lines audit log of hook decisions
``rehearsal_log``  JSON-lines log of rehearsals (``cpuguard rehearse``), one line each
``mode``         enforce | warn (warn: log, never block)
``on_error``     per operation (migrate, restore, start): block | allow when
                 cpuguard itself fails. Default: block migrate and restore
                 (the VM keeps running where it is), allow start (a guard bug
                 must not become an outage)
``deadline_seconds``  the hook decides by on_error after this long
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.policy import load_schema
from cpuguard.schema import validate

DEFAULT_CONFIG = Path("/etc/cpuguard/config.yaml")
DEFAULT_ON_ERROR = {"migrate": "block", "restore": "block", "start": "allow"}


@dataclass(frozen=True)
class Config:
    path: Path | None
    policies: Path = Path("/etc/cpuguard/policies")
    host_facts: Path = Path("/var/lib/cpuguard/host.json")
    host_name: str | None = None
    audit_log: Path = Path("/var/log/cpuguard/audit.jsonl")
    rehearsal_log: Path = Path("/var/log/cpuguard/rehearsals.jsonl")
    mode: str = "enforce"
    on_error: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ON_ERROR))
    deadline_seconds: float = 5.0
    check_permissions: bool = True


def config_from_data(raw: Any, path: Path) -> Config:
    if raw is None:
        raw = {}
    validate(raw, load_schema("config"), path)
    base = path.parent

    def resolve(key: str, default: Path) -> Path:
        return base / raw[key] if key in raw else default

    defaults = Config(None)
    return Config(
        path=path,
        policies=resolve("policies", defaults.policies),
        host_facts=resolve("host_facts", defaults.host_facts),
        host_name=raw.get("host_name"),
        audit_log=resolve("audit_log", defaults.audit_log),
        rehearsal_log=resolve("rehearsal_log", defaults.rehearsal_log),
        mode=raw.get("mode", "enforce"),
        on_error={**DEFAULT_ON_ERROR, **raw.get("on_error", {})},
        deadline_seconds=float(raw.get("deadline_seconds", defaults.deadline_seconds)),
        check_permissions=bool(raw.get("check_permissions", True)),
    )


def read_config(path: Path = DEFAULT_CONFIG, *, required: bool = False) -> Config:
    """The configuration at ``path``; defaults when it does not exist (unless required)."""
    from cpuguard.yamlsafe import read_yaml  # deferred: keeps PyYAML off the hook's fast path

    if not path.exists():
        if required:
            raise BadInput(path, "no such configuration file")
        return Config(None)
    return config_from_data(read_yaml(path), path)
