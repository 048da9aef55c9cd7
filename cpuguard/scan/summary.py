"""Totals over the files of a scan, and which CPUs satisfy them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cpuguard.levels import LEVEL_NAMES
from cpuguard.scan.records import DispatchedFeature, FeatureUse, FileScan, Totals

EXAMPLES = 5
SUGGESTIONS = 3
_RANK = {"high": 0, "medium": 1, "low": 2}


def _merge_required(files: Sequence[FileScan]) -> tuple[FeatureUse, ...]:
    merged: dict[str, FeatureUse] = {}
    for scan in files:
        for use in scan.required:
            examples = tuple(f"{scan.path}: {e}" for e in use.examples)
            old = merged.get(use.feature)
            if old is None:
                merged[use.feature] = FeatureUse(
                    use.feature, use.instructions, use.functions, examples[:EXAMPLES], use.evidence
                )
            else:
                merged[use.feature] = FeatureUse(
                    use.feature,
                    old.instructions + use.instructions,
                    old.functions + use.functions,
                    (old.examples + examples)[:EXAMPLES],
                    old.evidence,
                )
    return tuple(merged[f] for f in sorted(merged))


def _merge_dispatched(files: Sequence[FileScan], required: set[str]) -> tuple[DispatchedFeature, ...]:
    merged: dict[str, DispatchedFeature] = {}
    for scan in files:
        for item in scan.dispatched:
            if item.feature in required:
                continue
            old = merged.get(item.feature)
            reason = f"{scan.path}: {item.reason}"
            if old is None:
                merged[item.feature] = DispatchedFeature(
                    item.feature, reason, item.confidence, item.instructions, item.functions,
                    item.examples,
                )  # fmt: skip
                continue
            # Keep the least confident reason: the total is only as sure as its weakest file.
            weaker = _RANK[item.confidence] > _RANK[old.confidence]
            merged[item.feature] = DispatchedFeature(
                item.feature,
                reason if weaker else old.reason,
                item.confidence if weaker else old.confidence,
                old.instructions + item.instructions,
                old.functions + item.functions,
                old.examples,
            )
    return tuple(merged[f] for f in sorted(merged))


def _highest_level(files: Sequence[FileScan]) -> str | None:
    levels = [f.level for f in files if f.level in LEVEL_NAMES]
    return max(levels, key=LEVEL_NAMES.index) if levels else None


def satisfying_cpus(needed: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The oldest libvirt models and archspec microarchitectures having ``needed``.

    "Oldest" is approximated by the smallest feature set, which for both
    libvirt's cpu_map and archspec's tree follows the generations.
    """
    import archspec.cpu

    from cpuguard.cpumodels import microarchitectures_satisfying
    from cpuguard.knowledge import load_knowledge

    knowledge = load_knowledge()
    # An x86-64 binary needs long mode even when no instruction says so.
    models = [m.name for m in knowledge.cpu_map.satisfying(needed | {"lm"})]
    # archspec lists ISA extensions only: compare the features it describes.
    described: set[str] = set()
    vocabulary = knowledge.vocabulary
    for target in archspec.cpu.TARGETS.values():
        if target.family.name == "x86_64":
            described.update(vocabulary.try_canonical(f) or f for f in target.features)
    uarchs = [u.name for u in microarchitectures_satisfying(needed & described)]
    return tuple(models[:SUGGESTIONS]), tuple(uarchs[:SUGGESTIONS])


def totals(
    files: Sequence[FileScan],
    cpus: Callable[[frozenset[str]], tuple[tuple[str, ...], tuple[str, ...]]] = satisfying_cpus,
) -> Totals:
    scanned = [f for f in files if f.scanned]
    required = _merge_required(scanned)
    names = {u.feature for u in required}
    models, uarchs = cpus(frozenset(names)) if scanned else ((), ())
    return Totals(
        files_scanned=len(scanned),
        files_skipped=len(files) - len(scanned),
        code_bytes=sum(f.code_bytes for f in scanned),
        required=required,
        dispatched=_merge_dispatched(scanned, names),
        level=_highest_level(scanned),
        models=models,
        microarchitectures=uarchs,
    )
