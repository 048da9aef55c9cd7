"""Build small fleets on disk for the planning tests: a copy of the example
fleet that a test may break one item at a time."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import EXAMPLE_POLICIES


def copy_example(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(EXAMPLE_POLICIES, target)
    return target


def write_inventory(policies: Path, text: str) -> Path:
    path = policies / "inventory.yaml"
    path.write_text(text, encoding="utf-8")
    return path


EXAMPLE_HOSTS = """\
hosts:
  old-node: {facts: hosts/old-node.xml, cluster: legacy}
  mid-node: {facts: hosts/mid-node.xml, cluster: main}
  new-node: {facts: hosts/new-node.xml, cluster: main}
"""
