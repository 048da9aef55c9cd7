"""Human text for a verdict: the verdict first, then what is missing, grouped by origin."""

from __future__ import annotations

import re

from cpuguard.records import Missing, Move, Origin, Outcome, Verdict
from cpuguard.render.features import feature_text, fit, wrap
from cpuguard.render.rehearsals import rehearsal_text

_MOVES = {Move.LIVE: "live migration or memory-image restore", Move.COLD: "cold start"}
_RULES = {
    Move.LIVE: "live rule: the host must offer every feature the running guest sees now, "
    "plus what its CPU definition and workload need",
    Move.COLD: "cold rule: the host must offer what the guest CPU definition and workload need",
}


def by_origin(missing: tuple[Missing, ...]) -> list[tuple[Origin, list[str]]]:
    groups: dict[Origin, list[str]] = {}
    for item in missing:
        for origin in item.origins:
            groups.setdefault(origin, []).append(item.feature)
    order = {"binary": 0, "policy": 1, "level": 2, "guest-cpu": 3, "live": 4}
    # by kind, then by the first missing feature, so a binary's features read in name order
    return sorted(groups.items(), key=lambda kv: (order.get(kv[0].kind, 9), kv[1][0], kv[0].detail))


#: ``needed by PATH (N instructions in M functions)``: one binary's need of one feature.
_COUNTED = re.compile(r"^(needed by .+) \(([\d,]+) instructions? in [\d,]+ functions?\)$")


def by_binary(missing: tuple[Missing, ...]) -> list[tuple[Origin, list[str]]]:
    """:func:`by_origin`, with one group per binary instead of one per feature and instruction
    count (asterisk needing avx, avx2 and avx512f is one line, its instructions added up): for
    overviews over many VMs; ``check vm`` keeps each feature's instructions and functions."""
    out: list[tuple[Origin, list[str]]] = []
    at: dict[str, int] = {}  # "needed by PATH" -> index in out
    counts: dict[str, int] = {}
    for origin, features in by_origin(missing):
        match = _COUNTED.match(origin.detail) if origin.kind == "binary" else None
        if match is None:
            out.append((origin, list(features)))
            continue
        who = match.group(1)
        counts[who] = counts.get(who, 0) + int(match.group(2).replace(",", ""))
        if who in at:
            out[at[who]][1].extend(features)
        else:
            at[who] = len(out)
            out.append((origin, list(features)))
    for who, index in at.items():
        features = sorted(set(out[index][1]))
        if len(features) > 1:
            total = counts[who]
            out[index] = (Origin("binary", f"{who} ({total:,} instruction{'s' if total != 1 else ''})"), features)
    return out


def one_line(verdict: Verdict) -> str:
    """A single line for logs and libvirt's error message."""
    head = f"cpuguard: {verdict.outcome.value.upper()} {verdict.vm} on {verdict.host} ({verdict.move.value})"
    parts = list(verdict.problems)
    if verdict.missing:
        groups = "; ".join(f"{', '.join(feats)} ({origin.detail})" for origin, feats in by_origin(verdict.missing))
        parts.append(f"missing {groups}")
    if verdict.forbidden_present:
        parts.append("host has forbidden " + ", ".join(m.feature for m in verdict.forbidden_present))
    if verdict.hints:
        parts.append("would fit on " + ", ".join(verdict.hints))
    return head + (": " + "; ".join(parts) if parts else "")


def _grouped(missing: tuple[Missing, ...], verbose: bool = False) -> list[str]:
    """Features by the origin of the need, each group followed by where it comes from. Groups of
    one kind that name the same features are one group with several origins (bmi2 needed by
    three grub programs is one bmi2, not three)."""
    merged: list[tuple[str, list[str]]] = []
    index: dict[tuple[str, tuple[str, ...]], int] = {}
    for origin, features in by_origin(missing):
        key = (origin.kind, tuple(features))
        if key in index:
            merged[index[key]][1].append(origin.detail)
        else:
            index[key] = len(merged)
            merged.append((feature_text(features, verbose=verbose), [origin.detail]))
    lines = []
    for features_text, details in merged:
        lines.extend(wrap(features_text, "    "))
        lines.extend(f"        <- {detail}" for detail in details)
    return lines


def _binaries_head(verdict: Verdict) -> str:
    """``2 of 3 binaries`` when only some of the binaries checked cannot run."""
    total = verdict.vm.split()[0] if verdict.vm.endswith(" binaries") else "1"
    count = len(verdict.blocked)
    if not count or str(count) == total:
        return verdict.vm
    return f"{count} of {verdict.vm}"


def _besides(verdict: Verdict) -> str:
    return f" (besides {verdict.current_host}, where it runs now)" if verdict.current_host else ""


def render_text(verdict: Verdict, verbose: bool = False) -> str:
    """The verdict first; long feature lists grouped by level and wrapped unless ``verbose``."""
    lines: list[str] = []
    move = _MOVES[verdict.move]
    if verdict.subject == "binaries":
        heads = {
            Outcome.BLOCK: f"BLOCK  {_binaries_head(verdict)} cannot run on {verdict.host}",
            Outcome.WARN: f"WARN   {verdict.vm} may not run on {verdict.host}",
            Outcome.ALLOW: f"ALLOW  {verdict.vm} can run on {verdict.host}",
        }
        lines.append(heads[verdict.outcome])
    elif verdict.outcome is Outcome.BLOCK:
        lines.append(f"BLOCK  {verdict.vm} must not move to {verdict.host} ({move})")
    elif verdict.outcome is Outcome.WARN:
        rehearsed = any(r.outcome == "failed-cpu" for r in verdict.rehearsals)
        why = "it lacks what the VM needs" if verdict.missing else "not everything could be checked"
        why = "a rehearsal there failed on the CPU" if rehearsed and not verdict.missing else why
        lines.append(f"WARN   {verdict.vm} may move to {verdict.host} ({move}), but {why}")
    else:
        lines.append(f"ALLOW  {verdict.vm} can move to {verdict.host} ({move})")
    plural = verdict.subject == "binaries" and verdict.vm.endswith(" binaries")  # "3 binaries need"
    uses, needs = ("use", "need") if plural else ("uses", "needs")
    for problem in verdict.problems:
        lines.append(f"  {problem}")
    if verdict.missing:
        count = len(verdict.missing)
        who = _binaries_head(verdict) if verdict.subject == "binaries" else verdict.vm
        lines.append(f"  {verdict.host} lacks {count} feature{'s' if count != 1 else ''} {who} {needs}:")
        lines.extend(_grouped(verdict.missing, verbose))
    if verdict.forbidden_present:
        lines.append(f"  {verdict.host} has features the guest forbids:")
        lines.extend(_grouped(verdict.forbidden_present, verbose))
    for warning in verdict.warnings:
        lines.append(f"  warning: {warning}")
    lines.extend(rehearsal_text(verdict.rehearsals))
    # The VM's level is the lowest one covering the level features it needs (it may not need all
    # of them); the host's is the highest one it offers completely. Say so, or they seem to clash.
    vm_level = f"{uses} features up to {verdict.vm_level}" if verdict.vm_level else f"{needs} no x86-64 level feature"
    host_level = f"offers all of {verdict.host_level}" if verdict.host_level else "offers no complete x86-64 level"
    lines.append(f"  levels: {verdict.vm} {vm_level}; {verdict.host} {host_level}")
    if verdict.subject != "binaries":
        lines.append(f"  {_RULES[verdict.move]}")
    if verdict.hints:
        lines.append(f"  hosts that would take {verdict.vm}: {', '.join(verdict.hints)}")
    elif verdict.outcome is not Outcome.ALLOW:
        lines.append(f"  no other known host would take {verdict.vm}{_besides(verdict)}")
    if verdict.subject != "binaries" and verdict.current_host == verdict.host:
        lines.append(f"  note: {verdict.vm} already runs on {verdict.host}")
    if verdict.subject != "binaries" and not verdict.policy and not any("no policy" in n for n in verdict.notes):
        lines.append(f"  note: {verdict.vm} has no policy, so nothing declares what its workload needs")
    for note in verdict.notes:
        lines.append(f"  note: {note}")
    if verdict.policy:
        lines.append(f"  policy: {verdict.policy} (mode {verdict.policy_mode})")
    lines.append(f"  host facts: {verdict.host_source}")
    return "\n".join(fit(lines)) + "\n"
