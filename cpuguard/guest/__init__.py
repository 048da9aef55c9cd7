"""Guest inspection: read a VM's workload needs from its disks, from the host."""

from __future__ import annotations
