from __future__ import annotations

from pathlib import Path

import pytest
from hook_helpers import HookSite


@pytest.fixture
def site(tmp_path: Path) -> HookSite:
    """The example fleet's policies on a host whose snapshot says libvirt model Westmere ("old-node")."""
    s = HookSite(tmp_path / "etc")
    s.root.mkdir()
    s.install_policies()
    s.configure()
    s.snapshot_from("model:Westmere", "old-node")
    return s
