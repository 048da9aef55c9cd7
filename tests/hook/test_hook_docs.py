"""What docs/hook.md, docs/config.md and examples/systemd promise matches the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hook_helpers import ROOT, run_cpuguard

from cpuguard.config import config_from_data
from cpuguard.hook import audit
from cpuguard.hook.install import CONFIG_TEMPLATE
from cpuguard.yamlsafe import parse_yaml

HOOK_MD = (ROOT / "docs" / "hook.md").read_text()
CONFIG_MD = (ROOT / "docs" / "config.md").read_text()
SYSTEMD = ROOT / "examples" / "systemd"


def test_config_example_and_install_template_are_valid_configs(tmp_path: Path) -> None:
    (example,) = re.findall(r"```yaml\n(.*?)```", CONFIG_MD, re.S)
    written = CONFIG_TEMPLATE.format(policies="/p", host_facts="/h.json", audit_log="/a.jsonl")
    for text in (example, written):
        config = config_from_data(parse_yaml(text, "example"), tmp_path / "config.yaml")
        assert config.on_error == {"migrate": "block", "restore": "block", "start": "allow"}
        assert config.mode == "enforce"


def test_every_config_key_is_documented() -> None:
    import json

    schema = json.loads((ROOT / "cpuguard" / "data" / "schema-config.json").read_text())
    for key in schema["properties"]:
        assert f"| `{key}` |" in CONFIG_MD, key


def test_every_audit_key_is_documented() -> None:
    documented = set(re.findall(r"`([a-z_]+)`", HOOK_MD[HOOK_MD.index("## Audit log") : HOOK_MD.index("## Speed")]))
    assert set(audit.KEYS) <= documented


def test_systemd_units_are_valid() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is not installed")
        pytest.skip("systemd-analyze is not installed")
    units = sorted(str(p) for p in SYSTEMD.iterdir())
    done = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, check=False)
    # verify also checks that ExecStart's program exists, which only an installed machine has
    problems = [line for line in done.stderr.splitlines() if "is not executable" not in line and line.strip()]
    assert problems == []


def test_systemd_commands_are_real_cpuguard_commands() -> None:
    for unit in SYSTEMD.iterdir():
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart=/usr/local/bin/cpuguard "):
                args = line.split()[1:]
                options = [a for a in args if a.startswith("--")]
                helped = run_cpuguard(*[a for a in args if not a.startswith("/")][: args.index(options[0])], "--help")
                assert helped.returncode == 0, line
                for option in options:
                    assert option in helped.stdout, (unit.name, option)
