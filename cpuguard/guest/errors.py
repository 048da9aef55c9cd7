"""The one error the guest parsers raise: data read from a guest that cannot be used."""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with every unprintable character escaped: guest data may hold newlines or
    terminal escape sequences, and a message must stay one harmless line."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


class GuestDataError(ValueError):
    """Guest data that cannot be used; ``str()`` is one printable line saying why."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))
