"""Required or dispatched: which CPU features a program cannot run without.

A feature is *required* when an instruction needing it sits in code that
runs without a CPU check first: code reachable from the program's entry
points (the ELF entry, init arrays, exported functions of a library or of
a program that loads code, function pointers stored in data, and any
function nothing refers to) along calls, jumps and
address-taking that are not *guarded*. An edge is guarded when it leaves
a function that checks the CPU (runs CPUID, reads a CPU feature variable
such as ``__cpu_model`` or ``OPENSSL_ia32cap_P``, calls a CPUID query
function, tests a structure field CPUID code wrote (fields.py), or is an
ifunc resolver), or when it enters a function named
as a CPU-specific variant (``__memcpy_evex_unaligned``, ``foo.avx2.0``)
and nothing but a CPU check refers to it (a name alone never hides code
that ordinary code calls).

Everything else found in the code is *dispatched*, with the reason and a
confidence. This module is pure: it takes the program's shape and the
decoded summaries and returns records.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from cpuguard.scan.decode import FunctionCode
from cpuguard.scan.features import FeatureTable, Use
from cpuguard.scan.knowledge import DispatchKnowledge
from cpuguard.scan.program import GAP, PLT, Program
from cpuguard.scan.records import DispatchedFeature, FeatureUse
from cpuguard.scan.twins import find_twins

EXAMPLES = 5
_RANK = {"high": 0, "medium": 1, "low": 2}


@dataclass(frozen=True)
class Classification:
    required: tuple[FeatureUse, ...]
    dispatched: tuple[DispatchedFeature, ...]
    notes: tuple[str, ...]
    reachable_functions: int
    functions: int


@dataclass
class _Facts:
    needed: dict[str, int]  # features beyond the x86-64 baseline -> instructions
    checked: dict[str, tuple[int, str]]
    cpuid: bool
    instructions: int
    mix: dict[int, int]  # instruction code -> count (the function's shape)


def _facts(
    code: FunctionCode, table: FeatureTable, notable: frozenset[int], probes: frozenset[int],
    unnamed: dict[str, int],
) -> _Facts:  # fmt: skip
    counts, _ = code
    needed: dict[str, int] = {}
    checked: dict[str, tuple[int, str]] = {}
    for code_value in notable.intersection(counts):
        n = counts[code_value]
        info = table[code_value]
        if info.use is Use.NEEDED:
            for feature in info.features:
                needed[feature] = needed.get(feature, 0) + n
            for name in info.unnamed:
                unnamed[name] = unnamed.get(name, 0) + n
        elif info.use is Use.CHECKED:
            for feature in info.features:
                old = checked.get(feature, (0, info.why))
                checked[feature] = (old[0] + n, old[1])
    cpuid = not probes.isdisjoint(counts)
    return _Facts(needed, checked, cpuid, sum(counts.values()), counts)


def _address_set(ranges: Sequence[tuple[int, int]]) -> set[int]:
    result: set[int] = set()
    for start, size in ranges:
        result.update(range(start, start + min(max(size, 8), 4096)))
    return result


class _Graph:
    """Functions, their references resolved to function indexes, and CPU checks."""

    def __init__(
        self,
        program: Program,
        codes: Sequence[FunctionCode],
        facts: Sequence[_Facts],
        knowledge: DispatchKnowledge,
        baseline: frozenset[str],
        table: FeatureTable,
        field_checks: frozenset[int] = frozenset(),
    ) -> None:
        functions = program.functions
        self.program = program
        index = {f.start: i for i, f in enumerate(functions)}
        code_ranges = [(f.start, f.end) for f in functions if f.origin != GAP]
        low = min((r[0] for r in code_ranges), default=0)
        high = max((r[1] for r in code_ranges), default=0)

        # CPU state: named variables, GOT slots naming them or query functions,
        # and data written by functions that run CPUID.
        names = program.symbols
        watched = set(knowledge.cpu_state_variables) | set(knowledge.cpu_query_functions)
        state = [names[n] for n in knowledge.cpu_state_variables if n in names]
        state += [(slot, 8) for slot, n in program.got_names.items() if n in watched]
        for i, f in enumerate(facts):
            if f.cpuid:
                state += [(r, 4) for r in codes[i][1] if any(lo <= r < hi for lo, hi in program.writable)]
        state_addresses = _address_set(state)
        queries = {index[a] for n, (a, _) in names.items() if n in knowledge.cpu_query_functions
                   and a in index}  # fmt: skip

        self.plt_names: dict[int, str] = {}
        for i, fn in enumerate(functions):
            if fn.origin != PLT:
                continue
            for r in codes[i][1]:
                if r in program.got_names:
                    self.plt_names[i] = program.got_names[r] + "@plt"
                    if program.got_names[r] in watched:
                        queries.add(i)
                elif r in program.irelative_slots:
                    self.plt_names[i] = "*ifunc*@plt"

        self.edges: list[list[int]] = []
        self.falls_through: list[bool] = []  # runs on into the next function (see decode._FALLS_THROUGH)
        self.dispatcher: list[bool] = []
        self.variant: list[bool] = []
        for i, fn in enumerate(functions):
            refs = codes[i][1]  # sorted
            targets: list[int] = []
            if fn.origin not in (GAP, PLT) and refs:
                # Only references into code can be edges; most hit a function's start.
                inside = refs[bisect_left(refs, low) : bisect_left(refs, high)]
                found = list(map(index.get, inside))
                if None in found:  # into the middle of a function: rarer, slower
                    found = [program.containing(r) if j is None else j for r, j in zip(inside, found, strict=True)]
                targets = [j for j in found if j is not None and j != i]
            self.edges.append(targets)
            self.falls_through.append(fn.origin not in (GAP, PLT) and fn.end in index and fn.end in refs)
            checks = (
                facts[i].cpuid
                or i in field_checks
                or fn.start in program.resolvers
                or not state_addresses.isdisjoint(refs)
                or not queries.isdisjoint(targets)
            )
            self.dispatcher.append(bool(checks) and fn.origin not in (GAP, PLT))
            beyond = any(f not in baseline for f in facts[i].needed)
            self.variant.append(beyond and knowledge.is_variant_name(fn.name))
        self.twins = find_twins(self.edges, [f.needed for f in facts], [f.mix for f in facts], baseline, table)

    def name(self, i: int) -> str:
        return self.plt_names.get(i) or self.program.functions[i].name


def _unentered_exports(program: Program, knowledge: DispatchKnowledge) -> set[int]:
    """Exported functions that are no way into the file: those of a program that loads no code.

    A library is entered through its exported functions; a program is not.
    A program exports all its functions when linked with -rdynamic
    (mkfs.btrfs exports a sha256_process_x86 that nothing in it calls), and
    only a plugin it loads at run time can call them (python3's extension
    modules, asterisk's modules), so they stay entries of a program that can
    load code. The compiler keeps such a function for its export, not for a
    pointer the analysis missed: it is not an entry for being unreferenced
    either.
    """
    if program.kind == "shared-object" or knowledge.loads_code(program.got_names.values()):
        return set()
    return program.exported


def _roots(program: Program, graph: _Graph, knowledge: DispatchKnowledge) -> set[int]:
    functions = program.functions
    index = {f.start: i for i, f in enumerate(functions)}
    referenced: set[int] = set()
    for targets in graph.edges:
        referenced.update(targets)
    roots: set[int] = set()
    whole_sections = {i for i, f in enumerate(functions) if f.origin == GAP and "@" not in f.name}
    unentered = _unentered_exports(program, knowledge)
    for address in {program.entry} | (program.exported - unentered) | program.data_pointers | set(program.resolvers):
        if address in index:
            roots.add(index[address])
    for i, fn in enumerate(functions):
        if fn.origin in (GAP, PLT) or fn.start in unentered:
            continue
        # A function nothing refers to may be called through a pointer the
        # analysis missed, so it is a root -- unless it is only a second
        # entry to the code it runs into (glibc's __strcasecmp_avx2 sets up
        # a locale and continues into __strcasecmp_l_avx2): such code lives
        # or dies with what follows it, which has its own references.
        if i not in referenced and not graph.falls_through[i]:
            roots.add(i)
    roots |= whole_sections
    # A CPU-specific variant is never a root, even when exported: libyuv
    # exports ARGBToYRow_AVX2 so that callers can pick it themselves after
    # their own CPU check. If the library calls it unguarded, that call
    # still makes it reachable.
    return {r for r in roots if not graph.variant[r]}


def _reachable(graph: _Graph, roots: set[int]) -> set[int]:
    seen = set(roots)
    queue = deque(roots)
    while queue:
        i = queue.popleft()
        if graph.dispatcher[i]:
            continue  # what a CPU check selects is guarded
        for j in graph.edges[i]:
            if j not in seen and (i, j) not in graph.twins:
                seen.add(j)
                queue.append(j)
    return seen


def _guard_reasons(
    program: Program, graph: _Graph, reachable: set[int], knowledge: DispatchKnowledge
) -> dict[int, tuple[str, str]]:
    """Why each unreachable function runs only after a CPU check: ``(reason, confidence)``."""
    reasons: dict[int, tuple[str, str]] = {}
    entries: list[tuple[int, int, str, str]] = []
    for i, targets in enumerate(graph.edges):
        if graph.dispatcher[i]:
            resolver = program.functions[i].start in program.resolvers
            for j in targets:
                if j in reachable:
                    continue
                if resolver:
                    ifunc = program.resolvers[program.functions[i].start]
                    why = f"ifunc variant {graph.name(j)} (chosen by the resolver of {ifunc})"
                    entries.append((0, j, why, "high"))
                else:
                    why = f"{graph.name(j)} is used only after the CPU check in {graph.name(i)}"
                    entries.append((1, j, why, "medium"))
    for (caller, richer), plainer in graph.twins.items():
        if richer not in reachable:
            why = (
                f"{graph.name(richer)} and {graph.name(plainer)} are two builds of the same code"
                f" called from {graph.name(caller)}; only the first uses these extensions"
                " (a run-time choice between versions)"
            )
            entries.append((1, richer, why, "medium"))
    for j, is_variant in enumerate(graph.variant):
        if is_variant and j not in reachable:
            name = graph.name(j)
            clone = knowledge.is_clone_name(name)
            kind = "target_clones variant" if clone else "CPU-specific variant, by its name"
            entries.append((0 if clone else 1, j, f"{name} is a {kind}", "high" if clone else "medium"))
    unentered = _unentered_exports(program, knowledge)
    for j, fn in enumerate(program.functions):
        if fn.start in unentered and j not in reachable:
            why = (
                f"{graph.name(j)} is exported, but nothing in the program refers to it"
                " (a program is entered at its ELF entry, not through its exports)"
            )
            entries.append((2, j, why, "medium"))
    entries.sort(key=lambda e: (e[0], e[1]))
    queue: deque[int] = deque()
    for _, j, why, confidence in entries:
        if j not in reasons:
            reasons[j] = (why, confidence)
            queue.append(j)
    while queue:
        i = queue.popleft()
        why, confidence = reasons[i]
        for j in graph.edges[i]:
            if j not in reachable and j not in reasons:
                reasons[j] = (f"{why}; {graph.name(j)} is reached only from there", confidence)
                queue.append(j)
    return reasons


class _Names:
    """Function names, for a file whose call graph is not needed."""

    def __init__(self, program: Program) -> None:
        self.program = program

    def name(self, i: int) -> str:
        return self.program.functions[i].name


def _feature_uses(
    graph: _Graph | _Names, facts: Sequence[_Facts], members: set[int]
) -> dict[str, tuple[int, list[tuple[int, int]]]]:
    """feature -> (instructions, [(count, function index)])."""
    uses: dict[str, tuple[int, list[tuple[int, int]]]] = {}
    for i in members:
        for feature, n in facts[i].needed.items():
            total, where = uses.get(feature, (0, []))
            where.append((n, i))
            uses[feature] = (total + n, where)
    return uses


def _examples(graph: _Graph | _Names, where: list[tuple[int, int]]) -> tuple[str, ...]:
    ranked = sorted(where, key=lambda w: (-w[0], graph.name(w[1])))
    names: list[str] = []
    for _, i in ranked:
        name = graph.name(i)
        if name not in names:
            names.append(name)
        if len(names) == EXAMPLES:
            break
    return tuple(names)


def classify(
    program: Program,
    codes: Sequence[FunctionCode],
    table: FeatureTable,
    knowledge: DispatchKnowledge,
    baseline: frozenset[str],
    library_reason: str | None = None,
    compiled_for: frozenset[str] = frozenset(),
    psabi_baseline: frozenset[str] = frozenset(),
    field_checks: frozenset[int] = frozenset(),
) -> Classification:
    """Split the features found in ``codes`` into required and dispatched.

    Instructions needing only ``psabi_baseline`` features (x86-64-v1: every
    x86-64 CPU has them) are not counted. ``baseline`` (what every x86-64
    CPU model has) never makes a function a CPU-specific variant.
    ``library_reason`` says the file is a library known to dispatch at run
    time: everything it uses is dispatched unless in ``compiled_for`` (the
    ISA note's level). ``field_checks`` are the indexes of the functions that
    test a structure field CPUID code wrote (fields.py): CPU checks too.
    """
    unnamed: dict[str, int] = {}
    notable = table.notable(psabi_baseline)
    probes = table.probes()
    facts = [_facts(c, table, notable, probes, unnamed) for c in codes]
    graph: _Graph | _Names
    if library_reason:
        # Known to dispatch: the answer does not depend on the call graph, so
        # it is not built (the decoder did not collect references either).
        graph = _Names(program)
        reachable = set(range(len(program.functions)))  # gaps too: the library's own assembly
        reasons: dict[int, tuple[str, str]] = {}
    else:
        graph = _Graph(program, codes, facts, knowledge, baseline, table, field_checks)
        reachable = _reachable(graph, _roots(program, graph, knowledge))
        reasons = _guard_reasons(program, graph, reachable, knowledge)

    required_uses = _feature_uses(graph, facts, reachable)
    required: list[FeatureUse] = []
    dispatched: dict[str, DispatchedFeature] = {}
    for feature, (count, where) in sorted(required_uses.items()):
        functions = len({i for _, i in where})
        if library_reason and feature not in compiled_for:
            dispatched[feature] = DispatchedFeature(
                feature, f"library known to choose code at run time: {library_reason}",
                "medium", count, functions, _examples(graph, where),
            )  # fmt: skip
            continue
        required.append(FeatureUse(feature, count, functions, _examples(graph, where)))
    required_names = {u.feature for u in required}

    others = set(range(len(facts))) - reachable
    for feature, (count, where) in sorted(_feature_uses(graph, facts, others).items()):
        if feature in required_names or feature in dispatched:
            continue
        best = _best_reason(graph, where, reasons)
        dispatched[feature] = DispatchedFeature(
            feature, best[0], best[1], count, len({i for _, i in where}), _examples(graph, where)
        )
    for i, f in enumerate(facts):
        for feature, (n, why) in f.checked.items():
            if feature in required_names:
                continue
            old = dispatched.get(feature)
            if old is None or _RANK[old.confidence] > 0:
                prior = old.instructions if old else 0
                examples = old.examples if old else (graph.name(i),)
                dispatched[feature] = DispatchedFeature(
                    feature, why, "high", prior + n, (old.functions if old else 0) + 1, examples
                )
    notes = [
        f"{n:,} instruction{'s need' if n != 1 else ' needs'} the CPU extension {name!r}, "
        "which cpuguard has no name for"
        for name, n in sorted(unnamed.items())
    ]
    return Classification(
        tuple(required),
        tuple(dispatched[f] for f in sorted(dispatched)),
        tuple(notes),
        len(reachable),
        len(facts),
    )


def _best_reason(
    graph: _Graph | _Names, where: list[tuple[int, int]], reasons: dict[int, tuple[str, str]]
) -> tuple[str, str]:
    best: tuple[str, str] | None = None
    for _, i in sorted(where, key=lambda w: -w[0]):
        fn = graph.program.functions[i]
        if i in reasons:
            candidate = reasons[i]
        elif fn.origin == GAP:
            where_ = f"only in bytes outside any known function ({fn.name})"
            candidate = (f"{where_}: code without symbols or unwind information, or data", "low")
        else:
            candidate = (f"{graph.name(i)} is not reachable from the program's entry points", "low")
        if best is None or _RANK[candidate[1]] < _RANK[best[1]]:
            best = candidate
    return best or ("not reachable from the program's entry points", "low")
