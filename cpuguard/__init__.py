"""cpuguard: refuse VM moves onto hosts whose CPU cannot run the workload."""

from __future__ import annotations

__version__ = "0.1.0"
