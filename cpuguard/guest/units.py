"""The programs a systemd service starts, read from its unit file's text.

References: systemd.syntax(7) (sections, ``#``/``;`` comments, lines joined by a
trailing backslash with comment lines inside the join skipped, whitespace around
``=``, the "Quoting" rules and C-style escapes) and systemd.service(5) (the
``ExecStart=`` family, "Table 1. Special executable prefixes" ``@ - : + ! !!``,
command lines joined by a lone ``;`` with ``\\;`` standing for a literal one, an
empty assignment resetting the list, and the fixed search path for a command
given without a slash). The systemd 252 manual pages were used.

Only the ``[Service]`` section is read. A drop-in (``foo.service.d/*.conf``)
changes the commands of the unit it extends: pass the unit's text followed by
its drop-ins' texts, in systemd's order, as one string, and resets apply as
systemd applies them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from cpuguard.guest.errors import GuestDataError

EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost")

#: Where systemd looks for a command given without a slash (systemd.service(5), "Command
#: lines": /usr/local/bin, /usr/bin, /bin and their sbin counterparts), in its order.
SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

#: Largest unit text read. systemd's own limit is 1 MB per line; real units are a few KiB.
MAX_UNIT_CHARS = 4 * 1024 * 1024
#: Most commands taken from one unit.
MAX_COMMANDS = 1000

_PREFIXES = "@-:+!"
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "s": " "}
_HEX = re.compile(r"[0-9a-fA-F]+")
_LINE_END = re.compile(r"\r\n|\r|\n")
_SPECIFIER = re.compile(r"%(.)", re.DOTALL)


class Command(NamedTuple):
    """One program a unit starts: ``path`` as the unit gives it, ``absolute`` False for a
    bare name the caller resolves in :data:`SEARCH_PATH`, ``line`` where it is set (1-based)."""

    path: str
    absolute: bool
    line: int


class _Word(NamedTuple):
    text: str
    separator: bool  # a lone, unquoted, unescaped ";"


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, line) with backslash continuations joined, comments dropped."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(_LINE_END.split(text), start=1):
        stripped = raw.lstrip()
        if stripped.startswith(("#", ";")):
            continue  # a comment, also inside a continued line
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending.append(raw[:-1] + " ")
            continue
        pending.append(raw)
        yield start, "".join(pending)
        pending = []
    if pending:
        yield start, "".join(pending)


def _escape(value: str, index: int) -> tuple[str, int]:
    """The character of the C-style escape whose backslash is at ``index``, and where it ends."""
    if index + 1 >= len(value):
        return "\\", index + 1
    char = value[index + 1]
    if char in _ESCAPES:
        return _ESCAPES[char], index + 2
    widths = {"x": 2, "u": 4, "U": 8}
    if char in widths:
        digits = value[index + 2 : index + 2 + widths[char]]
        if len(digits) == widths[char] and _HEX.fullmatch(digits):
            code = int(digits, 16)
            if code <= 0x10FFFF:
                return chr(code), index + 2 + widths[char]
        return char, index + 2
    digits = value[index + 1 : index + 4]
    if len(digits) == 3 and all(d in "01234567" for d in digits):
        return chr(int(digits, 8)), index + 4
    return char, index + 2  # \\ \" \' and unknown escapes stand for the character itself


def _words(value: str) -> list[_Word] | None:
    """``value`` split per systemd.syntax(7)'s quoting, or None for an unterminated quote."""
    words: list[_Word] = []
    index = 0
    while True:
        while index < len(value) and value[index] in " \t\n":
            index += 1
        if index >= len(value):
            return words
        begin = index
        chars: list[str] = []
        quote = ""
        while index < len(value):
            char = value[index]
            if quote and char == quote:
                quote = ""
                index += 1
            elif not quote and char in "\"'":
                quote = char
                index += 1
            elif not quote and char in " \t\n":
                break
            elif char == "\\":
                decoded, index = _escape(value, index)
                chars.append(decoded)
            else:
                chars.append(char)
                index += 1
        if quote:
            return None
        words.append(_Word("".join(chars), value[begin:index] == ";"))


def _command(word: str, line: int, specifiers: Mapping[str, str]) -> Command | None:
    path = word.lstrip(_PREFIXES)
    if "%" in path:
        path = _SPECIFIER.sub(lambda m: "%" if m.group(1) == "%" else specifiers.get(m.group(1), m.group(0)), path)
    if not path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return None  # systemd refuses control characters in the command
    if path.startswith("/"):
        return Command(path, True, line)
    if "/" in path:
        return None  # neither absolute nor a bare name: systemd refuses it
    return Command(path, False, line)


def exec_commands(
    unit_text: str, *, keys: tuple[str, ...] = EXEC_KEYS, specifiers: Mapping[str, str] | None = None
) -> list[Command]:
    """The executable of every command line of ``keys`` in the ``[Service]`` section.

    Prefixes (``@``, ``-``, ``:``, ``+``, ``!``, ``!!``) are removed; with ``@`` the
    first word is still the program (the second is only its ``argv[0]``). ``%%``
    becomes ``%`` and other ``%`` specifiers are replaced from ``specifiers``
    (e.g. ``{"i": "eth0"}``) or left as written. Lines systemd would refuse
    (an unterminated quote, a relative path with a slash) are skipped, as systemd
    skips them. A unit larger than :data:`MAX_UNIT_CHARS` or with more than
    :data:`MAX_COMMANDS` commands raises :class:`GuestDataError`.
    """
    if len(unit_text) > MAX_UNIT_CHARS:
        raise GuestDataError(f"unit file larger than {MAX_UNIT_CHARS // 2**20} MiB")
    found: list[tuple[str, Command]] = []
    section = ""
    for number, line in _logical_lines(unit_text):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            continue
        key, equals, value = stripped.partition("=")
        key = key.rstrip()
        if section != "Service" or not equals or key not in keys or "\x00" in value:
            continue
        words = _words(value.strip())
        if words is None:
            continue
        if not words:
            found = [(k, command) for k, command in found if k != key]  # "ExecStart=" resets
            continue
        starts = True
        for word in words:
            if word.separator:
                starts = True
            elif starts:
                starts = False
                command = _command(word.text, number, specifiers or {})
                if command is not None:
                    found.append((key, command))
                    if len(found) > MAX_COMMANDS:
                        raise GuestDataError(f"unit file starts more than {MAX_COMMANDS:,} commands")
    return [command for _, command in found]
