"""systemd unit parsing: every real service unit of this machine, then the syntax corners."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cpuguard.guest import units
from cpuguard.guest.errors import GuestDataError
from cpuguard.guest.units import SEARCH_PATH, Command, exec_commands
from tests.conftest import in_ci

SYSTEM_UNITS = Path("/lib/systemd/system")


def real_units() -> list[Path]:
    found = sorted(SYSTEM_UNITS.glob("*.service")) + sorted(SYSTEM_UNITS.glob("*.service.d/*.conf"))
    if not found:
        message = "no systemd units on this machine (the suite runs on Debian)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_every_real_unit() -> None:
    """Each command found is one of the unit's Exec lines, names a program that exists on
    this machine, or is one systemd is told to tolerate missing ("-" or a Condition)."""
    total = 0
    for unit in real_units():
        text = unit.read_text(encoding="utf-8")
        lines = text.splitlines()
        commands = exec_commands(text)
        total += len(commands)
        for command in commands:
            assert re.match(r"\s*ExecStart(Pre|Post)?\s*=", lines[command.line - 1]), (unit, command)
            if command.absolute:
                exists = os.path.exists(command.path)
            else:
                exists = any(os.path.exists(os.path.join(d, command.path)) for d in SEARCH_PATH)
            tolerated = f"-{command.path}" in lines[command.line - 1] or re.search(
                rf"^Condition\w+=\|?!?{re.escape(command.path)}$", text, re.MULTILINE
            )
            assert exists or tolerated, (unit, command)
    assert total > 20


def test_a_real_unit_exactly() -> None:
    path = SYSTEM_UNITS / "systemd-journald.service"
    if not path.exists():
        pytest.skip("no systemd-journald.service here")
    assert [c.path for c in exec_commands(path.read_text())] == ["/lib/systemd/systemd-journald"]


UNIT = """\
[Unit]
Description=PBX
ExecStart=/usr/bin/not-in-service-section

[Service]
Type=oneshot
# ExecStart=/usr/bin/commented
; ExecStart=/usr/bin/commented-too
ExecStartPre=-/usr/sbin/asterisk-check --quick
ExecStartPre=+@/usr/libexec/helper helper-argv0 arg
ExecStart = !!/usr/sbin/asterisk -f \\
# a comment inside the continuation is skipped
    -vvv
ExecStart=-:"/opt/vendor app/bin/run" "quoted arg"
ExecStart=echo one ; printf two \\; notacommand ; /usr/local/bin/third
ExecStartPost=/usr/lib/x86_64-linux-gnu/helper\\x2dtool
ExecStop=/usr/bin/stopper
ExecReload=/usr/bin/reloader

[Install]
WantedBy=multi-user.target
ExecStart=/usr/bin/not-in-service-section-either
"""


def test_exec_lines_prefixes_quotes_continuations_and_separators() -> None:
    assert exec_commands(UNIT) == [
        Command("/usr/sbin/asterisk-check", True, 9),
        Command("/usr/libexec/helper", True, 10),
        Command("/usr/sbin/asterisk", True, 11),
        Command("/opt/vendor app/bin/run", True, 14),
        Command("echo", False, 15),
        Command("printf", False, 15),
        Command("/usr/local/bin/third", True, 15),
        Command("/usr/lib/x86_64-linux-gnu/helper-tool", True, 16),
    ]


def test_other_keys_on_request() -> None:
    assert [c.path for c in exec_commands(UNIT, keys=("ExecStop", "ExecReload"))] == [
        "/usr/bin/stopper",
        "/usr/bin/reloader",
    ]


def test_empty_assignment_resets_earlier_ones_of_that_key() -> None:
    """How a drop-in replaces a unit's command (systemd.service(5), ExecStart=)."""
    unit = "[Service]\nExecStartPre=/usr/bin/pre\nExecStart=/usr/bin/old\n"
    dropin = "[Service]\nExecStart=\nExecStart=/usr/local/bin/new\n"
    assert [c.path for c in exec_commands(unit + dropin)] == ["/usr/bin/pre", "/usr/local/bin/new"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/usr/bin/x", ["/usr/bin/x"]),
        ("'/usr/bin/single quoted' a", ["/usr/bin/single quoted"]),
        ('"/usr/bin/unterminated', []),  # systemd refuses the line
        ("bin/relative", []),  # neither absolute nor a bare name
        ("./relative", []),
        ("/usr/bin/tab\\tin-name", []),  # control characters are refused
        ("/usr/bin/nul\\x00", []),
        ("/usr/bin/e\\u00e9t\\101", ["/usr/bin/eétA"]),
        ("/usr/bin/odd\\q", ["/usr/bin/oddq"]),
        ("/usr/bin/trailing\\", ["/usr/bin/trailing"]),  # a continuation into nothing
        ("@-:+!!/usr/bin/all-prefixes", ["/usr/bin/all-prefixes"]),
        ("-", []),
        (";", []),
        ("; ; /usr/bin/after-empty", ["/usr/bin/after-empty"]),
        ("\\; /usr/bin/x", [";"]),
        ("/opt/%i/bin/run%%", ["/opt/eth0/bin/run%"]),
        ("/opt/%j/bin/run", ["/opt/%j/bin/run"]),
    ],
)
def test_command_words(value: str, expected: list[str]) -> None:
    assert [c.path for c in exec_commands(f"[Service]\nExecStart={value}\n", specifiers={"i": "eth0"})] == expected


def test_line_endings_and_junk() -> None:
    text = "[Service]\r\nExecStart=/usr/bin/crlf\r\nnot a key\n=novalue\nExecStart\n[Broken\nExecStart=/usr/bin/y\x00\n"
    assert [c.path for c in exec_commands(text)] == ["/usr/bin/crlf"]
    assert exec_commands("") == []
    assert exec_commands("ExecStart=/usr/bin/no-section") == []
    assert exec_commands("[service]\nExecStart=/usr/bin/wrong-case\n") == []


def test_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(GuestDataError, match="larger than 4 MiB"):
        exec_commands("#" * (units.MAX_UNIT_CHARS + 1))
    monkeypatch.setattr(units, "MAX_COMMANDS", 3)
    with pytest.raises(GuestDataError, match="more than 3 commands"):
        exec_commands("[Service]\nExecStart=a ; b ; c ; d\n")


def test_long_hostile_unit_is_linear() -> None:
    """Half a million continued lines and quotes: parsed in one pass, no recursion."""
    text = "[Service]\nExecStart=/usr/bin/x " + "'a' \\\n" * 500_000 + "end\n"
    assert exec_commands(text) == [Command("/usr/bin/x", True, 2)]
