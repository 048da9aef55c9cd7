"""Writing what a scan produced: standard output or a file (atomically), and merging
scanned binaries into a VM policy. Shared by ``scan`` and ``scan --guest``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click

from cpuguard.errors import BadInput


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a file)."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except OSError as exc:
        raise BadInput(path, f"cannot write: {exc.strerror or exc}") from None


def check_merge_target(policy: Path, vm: str | None = None) -> None:
    """Refuse to create a policy nothing would read: a new ``VM.yaml`` must name a VM the
    inventory (or an existing policy) knows, or ``vm``, the guest just scanned. An existing
    policy file is always a fine target."""
    if policy.exists():
        return
    import difflib

    from cpuguard.fleet import find_policies
    from cpuguard.inventory import read_inventory

    if not policy.parent.is_dir():
        raise BadInput(policy, f"directory does not exist: {policy.parent}")
    # POLICIES/vms/VM.yaml belongs to POLICIES; a file elsewhere to the policies cpuguard uses
    root = policy.parent.parent if policy.parent.name == "vms" else find_policies(None)[0]
    known = set(read_inventory(root).vms) | {p.stem for p in (root / "vms").glob("*.yaml")}
    if vm is not None:
        known.add(vm)
    if policy.stem not in known:
        close = difflib.get_close_matches(policy.stem, sorted(known), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise BadInput(policy, f"no VM {policy.stem} in the inventory{hint}")


def emit(text: str, output: Path | None) -> None:
    """Write ``text`` to ``output`` atomically, or to standard output."""
    if output is not None:
        write_atomically(output, text)
    else:
        click.echo(text, nl=False)


def merge_into_policy(policy: Path, new: list[dict[str, Any]], vm: str | None = None) -> int:
    """Add or replace ``new`` binaries entries in a policy file, without the x86-64 baseline
    features. A new file is created only for a VM the inventory knows, or for ``vm`` (the guest
    scanned), and names its VM. Entries already there are kept as they are."""
    import yaml

    from cpuguard.scan.policy import merge_binaries, policy_binaries_from_data, without_baseline
    from cpuguard.yamlsafe import read_yaml

    check_merge_target(policy, vm)
    data = read_yaml(policy) if policy.exists() else None
    if data is None:
        data = {"vm": policy.stem}  # the schema's rule: vm matches the file name
    if not isinstance(data, dict):
        raise BadInput(policy, "expected a mapping at the top level of the policy")
    existing = data.get("binaries") or []
    policy_binaries_from_data(existing, policy)  # refuse to merge into a broken section
    data["binaries"] = merge_binaries(existing, without_baseline(new))
    policy_binaries_from_data(data["binaries"], policy)
    write_atomically(policy, yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100))
    return len(new)
