"""The shim libvirt runs (``hooks/qemu``): fill in its settings, read them back.

The template's settings are ``name=@NAME@`` lines; everything else in it is
copied as is. The marker line tells cpuguard's hook from another tool's.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from cpuguard.errors import BadInput

MARKER = "# cpuguard-hook-shim 1"
SETTINGS = (
    "python", "python_path", "config", "cache_dir", "socket", "audit_log",
    "on_error_migrate", "on_error_restore", "on_error_start",
)  # fmt: skip


def template_path() -> Path:
    """hooks/qemu of the cpuguard source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "hooks" / "qemu"


def python_path() -> list[str]:
    """Where the hook's interpreter finds cpuguard and its dependencies without ``site``."""
    import cpuguard

    entries = [str(Path(cpuguard.__file__).resolve().parent.parent)]
    # absolute: libvirt runs the hook from /
    entries += [
        os.path.abspath(p) for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)
    ]
    return list(dict.fromkeys(entries))


def render(settings: Mapping[str, str], template: str | None = None) -> str:
    text = template if template is not None else read_template()
    missing = [name for name in SETTINGS if name not in settings]
    if missing:
        raise ValueError(f"shim settings missing: {', '.join(missing)}")
    for name in SETTINGS:
        placeholder = f"{name}=@{name.upper()}@"
        if placeholder not in text:
            raise BadInput(template_path(), f"not a cpuguard shim template: no {placeholder} line")
        text = text.replace(placeholder, f"{name}={shlex.quote(settings[name])}")
    return text


def read_template(path: Path | None = None) -> str:
    path = path or template_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(path, f"cannot read the hook shim template: {exc.strerror or exc}") from None
    if MARKER not in text.splitlines():
        raise BadInput(path, "not a cpuguard shim template (marker line missing)")
    return text


def is_ours(text: str) -> bool:
    return MARKER in text.splitlines()


def read_settings(text: str) -> dict[str, str]:
    """The settings of an installed shim (values unquoted)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in SETTINGS and name not in found:
            words = shlex.split(value)
            found[name] = words[0] if words else ""
    return found
