"""The shim libvirt runs: fill in its settings, read them back.

The template is package data (``qemu-shim.sh`` next to this module, so that
``pip install .`` ships it; the source tree's ``hooks/qemu`` links to it).
Its settings are ``name=@NAME@`` lines; everything else in it is copied as
is. The marker line tells cpuguard's hook from another tool's.
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
    "python", "python_path", "config", "cache_dir", "audit_log", "deadline",
    "on_error_migrate", "on_error_restore", "on_error_start",
)  # fmt: skip


TEMPLATE_NAME = "qemu-shim.sh"


def template_path() -> Path:
    """The shim template installed with this package."""
    return Path(__file__).with_name(TEMPLATE_NAME)


def python_path() -> list[str]:
    """Where the hook's interpreter finds cpuguard and its dependencies without ``site``."""
    import cpuguard

    entries = [str(Path(cpuguard.__file__).resolve().parent.parent)]
    # absolute: libvirt runs the hook from /
    entries += [
        os.path.abspath(p) for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)
    ]
    return list(dict.fromkeys(entries))


def _placeholder(name: str) -> str:
    return f"{name}=@{name.upper()}@"


def render(settings: Mapping[str, str], template: str | None = None) -> str:
    text = template if template is not None else read_template()
    missing = [name for name in SETTINGS if name not in settings]
    if missing:
        raise ValueError(f"shim settings missing: {', '.join(missing)}")
    check_template(text)
    for name in SETTINGS:
        text = text.replace(_placeholder(name), f"{name}={shlex.quote(settings[name])}")
    return text


def check_template(text: str, path: Path | None = None) -> None:
    """Refuse a template without the marker line or a setting's placeholder line."""
    where = path or template_path()
    if MARKER not in text.splitlines():
        raise BadInput(where, "not a cpuguard shim template (marker line missing)")
    for name in SETTINGS:
        if _placeholder(name) not in text:
            raise BadInput(where, f"not a cpuguard shim template: no {_placeholder(name)} line")


def read_template(path: Path | None = None) -> str:
    """The template's text, checked (:func:`check_template`)."""
    path = path or template_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(
            path, f"cannot read the hook shim template: {exc.strerror or exc} (reinstall cpuguard)"
        ) from None
    check_template(text, path)
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
