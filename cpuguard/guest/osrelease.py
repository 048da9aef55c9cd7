"""Which operating system a guest runs, from its ``os-release`` file.

Reference: os-release(5) (freedesktop.org / systemd): newline-separated
``KEY=value`` assignments compatible with shell syntax; values quoted with
double or single quotes when they hold anything but ``A-Za-z0-9``, shell
special characters (``$``, quotes, backslash, backtick) escaped with a
backslash; concatenation of quoted strings not supported; lines starting with
``#`` are comments; blank lines ignored. ``ID`` and ``ID_LIKE`` are lower-case
words of ``0-9 a-z . _ -``; without ``ID`` the default is ``linux``, without
``NAME`` or ``PRETTY_NAME`` it is ``Linux``.

The text is the guest's: lines that do not parse are ignored, as a shell
script's reader would fail them, and the size is bounded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cpuguard.guest.errors import GuestDataError

#: Largest os-release read; real ones are well under 1 KiB.
MAX_CHARS = 64 * 1024

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID = re.compile(r"[0-9a-z._-]+")
_MAJOR = re.compile(r"\d+")
# inside double quotes the shell removes a backslash only before these
_DOUBLE_QUOTED_ESCAPES = frozenset('$`"\\')


def _after_value(rest: str) -> bool:
    """Whether what follows a value is nothing or a comment, as a shell reads it."""
    rest = rest.strip()
    return not rest or rest.startswith("#")


def _unquote(raw: str) -> str | None:
    """The shell value of ``raw``, or None when it is not one quoted or bare word."""
    value: list[str] = []
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        index = 1
        while index < len(raw):
            char = raw[index]
            if char == quote:
                return "".join(value) if _after_value(raw[index + 1 :]) else None
            if quote == '"' and char == "\\" and raw[index + 1 : index + 2] in _DOUBLE_QUOTED_ESCAPES:
                index += 1
                char = raw[index]
            value.append(char)
            index += 1
        return None  # unterminated quote
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "\\" and index + 1 < len(raw):
            index += 1
            value.append(raw[index])
        elif char.isspace():
            return "".join(value) if index and _after_value(raw[index:]) else None
        elif char in "'\";&|<>()`$":
            return None  # concatenated quotes, or text a shell would interpret
        else:
            value.append(char)
        index += 1
    return "".join(value)


def parse_os_release(text: str) -> dict[str, str]:
    """The assignments of an os-release file, later ones winning as in a shell.

    Lines that are not ``KEY=value`` with a valid key and one well-formed value,
    or whose value holds control characters, are skipped. Text longer than
    :data:`MAX_CHARS` raises :class:`GuestDataError`.
    """
    if len(text) > MAX_CHARS:
        raise GuestDataError(f"os-release larger than {MAX_CHARS // 1024} KiB")
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, equals, raw = stripped.partition("=")
        if not equals or not _KEY.fullmatch(key):
            continue
        value = _unquote(raw)
        if value is None or not value.isprintable():
            continue
        fields[key] = value
    return fields


def _ids(value: str) -> tuple[str, ...]:
    return tuple(word for word in value.lower().split() if _ID.fullmatch(word))


@dataclass(frozen=True)
class OsInfo:
    """A guest's operating system as its os-release names it."""

    id: str = "linux"
    id_like: tuple[str, ...] = ()
    version_id: str = ""
    pretty_name: str = "Linux"
    name: str = "Linux"

    @classmethod
    def from_release(cls, fields: Mapping[str, str]) -> OsInfo:
        """Build from :func:`parse_os_release`'s result, with os-release(5)'s defaults."""
        ids = _ids(fields.get("ID", ""))
        name = fields.get("NAME", "").strip() or "Linux"
        return cls(
            id=ids[0] if len(ids) == 1 else "linux",
            id_like=_ids(fields.get("ID_LIKE", "")),
            version_id=fields.get("VERSION_ID", "").strip(),
            pretty_name=fields.get("PRETTY_NAME", "").strip() or name,
            name=name,
        )

    @property
    def major(self) -> int | None:
        """The major version: the number ``VERSION_ID`` starts with (``9.4`` -> 9,
        ``24.04`` -> 24), or None without one."""
        match = _MAJOR.match(self.version_id)
        return int(match.group()) if match and len(match.group()) <= 9 else None


def os_info(text: str) -> OsInfo:
    """:class:`OsInfo` straight from an os-release file's text."""
    return OsInfo.from_release(parse_os_release(text))
