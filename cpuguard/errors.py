"""Exceptions that map to cpuguard's documented exit codes.

Exit codes (an interface, see README): 0 allowed, 1 blocked, 2 bad input or
usage, 3 internal error. Core modules raise these; only the CLI turns them
into exit codes and one-line messages.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_BLOCKED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class CpuguardError(Exception):
    """An error cpuguard expects and explains in one line."""

    exit_code = EXIT_INTERNAL


class BadInput(CpuguardError):
    """Input that cpuguard refuses: a file, a name or an option.

    ``str()`` is one line: ``"<where>: <problem>"``.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, where: str | Path | None, problem: str) -> None:
        # a file name may hold a newline; the message must stay one line
        self.where = str(where).replace("\n", "\\n").replace("\r", "\\r") if where is not None else None
        self.problem = " ".join(problem.split())
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.where}: {self.problem}" if self.where else self.problem


class UnknownName(BadInput):
    """A feature, model, VM or host name that cpuguard does not know."""

    def __init__(
        self,
        where: str | Path | None,
        kind: str,
        name: str,
        suggestions: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self.name = name
        self.suggestions = tuple(suggestions)
        hint = f" (did you mean {', '.join(self.suggestions)}?)" if self.suggestions else ""
        super().__init__(where, f"unknown {kind} {name!r}{hint}")


class UnknownFeature(UnknownName):
    def __init__(self, name: str, suggestions: list[str] | tuple[str, ...] = (), where: str | None = None) -> None:
        super().__init__(where, "CPU feature", name, suggestions)


class AmbiguousFeature(UnknownFeature):
    """A spelling that names several features (``sse4``): refused with the candidates."""

    def __init__(self, name: str, meanings: tuple[str, ...], where: str | None = None) -> None:
        super().__init__(name, meanings, where)
        self.problem = f"ambiguous CPU feature {name!r}: say which of {', '.join(meanings)}"
        self.args = (self.line(),)


class MissingDependency(CpuguardError):
    """An optional component is not installed."""

    exit_code = EXIT_BAD_INPUT
