"""A pair of real libvirt daemons shared by every ``libvirt``-marked test.

Load it as a plugin and ask for ``testbed``::

    pytest_plugins = ["libvirt_testbed"]

    @pytest.mark.libvirt
    def test_something(testbed):
        testbed.define_guest("a", "vm1")
        testbed.start_guest("a", "vm1")
        assert testbed.migrate("a", "b", "vm1").returncode == 0

Requiring it as a plugin (rather than importing the fixture) registers it once,
so the daemons start once per pytest run whichever modules use them. The daemons
are ``scripts/testbed``; see docs/testbed.md. When they cannot start, the
fixture fails with the reason under CI (``CI=true``) and skips with it otherwise.

PYTEST_DONT_REWRITE: test modules import this before pytest loads it as a
plugin, and it has no assertions worth rewriting.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import random
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "testbed"
# Kept across runs: a cold QEMU capability cache costs ~7 s per start.
CACHE_DIR = Path(tempfile.gettempdir(), "cpuguard-testbed-cache")
# scripts/testbed uses base..base+1 for libvirtd and base+10..base+29 for migrations.
PORT_SPAN = 30


def load_script(path: Path = SCRIPT) -> ModuleType:
    """scripts/testbed as a module (it has no .py suffix, so no plain import)."""
    loader = importlib.machinery.SourceFileLoader("cpuguard_testbed_script", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up here
    loader.exec_module(module)
    return module


script = load_script()
Testbed: Any = script.Testbed
TestbedError: type[Exception] = script.TestbedError


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(rng: random.Random | None = None, tries: int = 100) -> int:
    """A base port whose whole range is unused now, so parallel pytest runs do not clash."""
    rng = rng or random.Random()
    for _ in range(tries):
        base = rng.randrange(20000, 32000, PORT_SPAN)
        if all(port_free(base + i) for i in range(PORT_SPAN)):
            return base
    raise TestbedError(f"no {PORT_SPAN} free ports in 20000-32000")


def unavailable(reason: str, environ: Mapping[str, str] = os.environ) -> None:
    """Stop the test: a failure on CI, where the testbed must work; a skip elsewhere."""
    if environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Running node-a and node-b; stopped when pytest finishes.

    Attributes: ``uri_a``, ``uri_b``, ``nodes``; methods (node is "a", "b",
    "node-a" or "node-b"): ``hooks_dir(node)``, ``etc_cpuguard(node)``,
    ``define_guest(node, name, model="Westmere", passthrough=False)``,
    ``start_guest(node, name)``, ``migrate(src, dst, name, *virsh_args)`` (the
    completed virsh process, unchecked), ``reload(node)``,
    ``virsh(node, *args, check=True)``, ``domain_state(node, name)``.
    Guests persist for the whole run: give each test its own guest names.
    """
    bed = Testbed(tmp_path_factory.mktemp("testbed"), free_base_port(), cache_dir=CACHE_DIR)
    try:
        bed.start()
    except (TestbedError, OSError, subprocess.SubprocessError) as e:
        bed.stop(keep=True)
        unavailable(f"libvirt testbed unavailable: {e}")
    try:
        yield bed
    finally:
        # Logs stay in pytest's temporary directory for post-mortems.
        bed.stop(keep=True)
