"""Long feature lists for people: wrapped to a screen, grouped by x86-64 level.

``all of x86-64-v3 plus avx512bw, avx512f`` says in one line what 30 names say
in three; the full list stays in ``--format json`` and behind ``--verbose``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

from cpuguard.levels import LEVEL_NAMES, level_features, level_own_features
from cpuguard.records import HostFacts

#: Text output is wrapped to this many columns (a terminal's default).
WIDTH = 80

#: Below this many features a list is short enough to read name by name.
GROUP_FROM = 8


def wrap(text: str, indent: str, width: int = WIDTH, more: str = "  ") -> list[str]:
    """``text`` wrapped at ``width``, its first line at ``indent``, the others ``more`` deeper.
    Feature names and paths are never broken."""
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent + more,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def by_level(features: Iterable[str]) -> tuple[str, list[str]]:
    """(how the levels covered are said, the features beyond them, sorted).

    All of a level (its every feature, the levels below included): ``all of x86-64-v3``.
    Otherwise the levels whose own additions are all there: ``what x86-64-v3 and x86-64-v4 add``
    (a host missing them offers the levels below). ``""`` when no level is covered."""
    have = frozenset(features)
    whole = [name for name in LEVEL_NAMES if level_features(name) <= have]
    if whole and whole[-1] != LEVEL_NAMES[0]:
        top = whole[-1]
        return f"all of {top}", sorted(have - level_features(top))
    added = [name for name in LEVEL_NAMES[1:] if level_own_features(name) <= have]
    if not added:
        return "", sorted(have)
    covered = frozenset().union(*(level_own_features(name) for name in added))
    return f"what {' and '.join(added)} add{'s' if len(added) == 1 else ''}", sorted(have - covered)


def feature_text(features: Iterable[str], *, verbose: bool = False) -> str:
    """Features comma-separated; a long list grouped by level unless ``verbose``."""
    names = sorted(features)
    if verbose or len(names) < GROUP_FROM:
        return ", ".join(names)
    levels, rest = by_level(names)
    if not levels:
        return ", ".join(names)
    return f"{levels}, plus {', '.join(rest)}" if rest else levels


def feature_lines(features: Iterable[str], indent: str, *, verbose: bool = False, width: int = WIDTH) -> list[str]:
    """:func:`feature_text`, wrapped."""
    return wrap(feature_text(features, verbose=verbose), indent, width)


def fit(lines: Iterable[str], width: int = WIDTH, *, heads: bool = False) -> list[str]:
    """Every indented line wrapped at ``width``, its continuation two columns deeper than its
    indent; no word (a path, a feature name) is ever broken. Headlines (not indented, unless
    ``heads``) and origins (``<- ...``: where one need comes from) stay whole, to be found by grep."""
    out: list[str] = []
    for line in lines:
        if len(line) <= width or not (heads or line.startswith(" ")) or line.lstrip().startswith("<- "):
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out.extend(wrap(line.strip(), indent, width))
    return out


#: Lines of features ``host show`` prints by default; --verbose prints them all.
HOST_FEATURE_LINES = 4


def host_lines(
    facts: HostFacts, spec: str, level: str | None, runnable: list[str], *, verbose: bool = False
) -> list[str]:
    """``cpuguard host show``: who, level, models, source; then the features, grouped by level and
    cut to a few lines unless ``verbose``."""
    lines = [f"{facts.name or spec}: {facts.arch} {facts.vendor} {facts.model_name}".rstrip()]
    lines.append(f"  level: {level or 'below x86-64-v1'}")
    more = f" (and {len(runnable) - 5} smaller)" if len(runnable) > 5 else ""
    lines.append(f"  libvirt models it can run, largest first: {', '.join(runnable[:5]) or 'none'}{more}")
    captured = f", captured {facts.captured_at.isoformat()}" if facts.captured_at else ""
    lines.append(f"  source: {facts.source}{captured}")
    lines.extend(f"  note: {note}" for note in facts.notes)
    features = wrap(f"{len(facts.flags)} features: {feature_text(facts.flags, verbose=verbose)}", "  ")
    if not verbose and len(features) > HOST_FEATURE_LINES:
        shown = features[:HOST_FEATURE_LINES]
        # every shown line but the last ends in a comma; the last one's names are complete too
        named = " ".join(shown).split(": ", 1)[1]
        if " plus " in named:
            named = named.split(" plus ", 1)[1]
        left = len(by_level(facts.flags)[1]) - len([n for n in named.split(",") if n.strip()])
        shown[-1] = shown[-1].rstrip(",")
        features = [*shown, f"    and {left} more (--verbose or --format json lists all {len(facts.flags)})"]
    return fit(lines) + features
