"""Read what binaries need from the CPU: ``cpuguard scan``.

Public API::

    scan_paths(paths, *, follow_needed=False, cache_dir=..., progress=None) -> ScanReport
    report_to_policy_binaries(report) -> list[dict]      # a policy's ``binaries:``
    policy_binaries_from_data(data, source_path) -> list[BinaryNeeds]

See docs/scan.md for how required and dispatched features are told apart.
Names are imported lazily: ``cpuguard.scan.cli`` is loaded by every
``cpuguard`` command, and the decoder should only load when a scan runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cpuguard.scan.policy import policy_binaries_from_data, report_to_policy_binaries
    from cpuguard.scan.records import (
        BinaryNeeds,
        DispatchedFeature,
        FeatureUse,
        FileScan,
        ScanReport,
        Totals,
    )
    from cpuguard.scan.scanner import DefaultCache, Progress, scan_paths

_EXPORTS = {
    "BinaryNeeds": "records",
    "DispatchedFeature": "records",
    "FeatureUse": "records",
    "FileScan": "records",
    "ScanReport": "records",
    "Totals": "records",
    "DefaultCache": "scanner",
    "Progress": "scanner",
    "scan_paths": "scanner",
    "policy_binaries_from_data": "policy",
    "report_to_policy_binaries": "policy",
}

__all__ = [
    "BinaryNeeds",
    "DefaultCache",
    "DispatchedFeature",
    "FeatureUse",
    "FileScan",
    "Progress",
    "ScanReport",
    "Totals",
    "policy_binaries_from_data",
    "report_to_policy_binaries",
    "scan_paths",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
