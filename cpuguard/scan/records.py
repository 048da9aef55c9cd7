"""Records the scanner produces: plain, frozen, typed.

``FileScan`` is what one ELF file needs; ``ScanReport`` is a whole scan with
totals. ``BinaryNeeds`` is the part of a file's scan a VM policy keeps
(the ``binaries:`` section) and what the decision engine consumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Part of the cache key: bump whenever a scan of the same bytes would change.
SCANNER_VERSION = "2"

# Evidence kinds for a required feature.
DECODED = "decoded"  # instructions found in code reachable from the entry points
ISA_NOTE = "isa-note"  # GNU_PROPERTY_X86_ISA_1_NEEDED, enforced by the loader
FEATURE_NOTE = "feature-note"  # GNU_PROPERTY_X86_FEATURE_2_NEEDED

CONFIDENCES = ("high", "medium", "low")


@dataclass(frozen=True)
class FeatureUse:
    """A feature the program cannot run without, and where it is used."""

    feature: str
    instructions: int
    functions: int
    examples: tuple[str, ...] = ()
    evidence: str = DECODED


@dataclass(frozen=True)
class DispatchedFeature:
    """A feature present in the code but only used after a run-time CPU check."""

    feature: str
    reason: str
    confidence: str  # high | medium | low
    instructions: int = 0
    functions: int = 0
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileScan:
    """The scan of one file. ``skipped`` is set (and the rest empty) when it was not scanned."""

    path: str
    sha256: str | None = None
    size: int = 0
    arch: str | None = None
    kind: str | None = None  # executable | pie-executable | shared-object
    skipped: str | None = None
    code_bytes: int = 0
    functions: int = 0
    required: tuple[FeatureUse, ...] = ()
    dispatched: tuple[DispatchedFeature, ...] = ()
    level: str | None = None  # lowest x86-64 level covering the required level features
    isa_needed: str | None = None  # from the GNU property note
    notes: tuple[str, ...] = ()
    needed_libraries: tuple[str, ...] = ()  # DT_NEEDED
    runpath: tuple[str, ...] = ()  # DT_RUNPATH / DT_RPATH entries
    from_cache: bool = False

    @property
    def scanned(self) -> bool:
        return self.skipped is None

    @property
    def required_features(self) -> frozenset[str]:
        return frozenset(u.feature for u in self.required)


@dataclass(frozen=True)
class Totals:
    files_scanned: int
    files_skipped: int
    code_bytes: int
    required: tuple[FeatureUse, ...]  # merged over files; examples are "path: function"
    dispatched: tuple[DispatchedFeature, ...]
    level: str | None
    models: tuple[str, ...]  # oldest libvirt named models offering every required feature
    microarchitectures: tuple[str, ...]  # oldest archspec microarchitectures doing so


@dataclass(frozen=True)
class ScanReport:
    files: tuple[FileScan, ...]
    totals: Totals
    scanned_at: datetime

    @property
    def scanned(self) -> tuple[FileScan, ...]:
        return tuple(f for f in self.files if f.scanned)

    @property
    def skipped(self) -> tuple[FileScan, ...]:
        return tuple(f for f in self.files if not f.scanned)


@dataclass(frozen=True)
class BinaryNeeds:
    """One entry of a policy's ``binaries:`` section."""

    path: str
    sha256: str | None
    scanned_at: datetime | None
    level: str | None
    required: tuple[FeatureUse, ...]
    dispatched: tuple[DispatchedFeature, ...] = ()
    notes: tuple[str, ...] = ()
    source: str = ""  # the policy file this came from
    found_in: str = ""  # read from a guest's disk: "pbx01's disk vda"
    reason: str = ""  # why a guest scan chose it: "owned by no package", ...

    @property
    def features(self) -> frozenset[str]:
        return frozenset(u.feature for u in self.required)

    def provenance(self, feature: str) -> str:
        """``needed by /usr/sbin/asterisk (1,234 instructions in 87 functions)``; for a file read
        from a guest's disk ``needed by /usr/sbin/asterisk in pbx01's disk vda (scanned 2026-12-06)
        (…)``."""
        name = self.path
        if self.found_in:
            when = f", scanned {self.scanned_at:%Y-%m-%d}" if self.scanned_at else ""
            name = f"{self.path} in {self.found_in}{when}"
        use = next((u for u in self.required if u.feature == feature), None)
        if use is None:
            return f"needed by {name}"
        if use.evidence == ISA_NOTE:
            return f"needed by {name} (its x86-64 ISA level note)"
        if use.evidence == FEATURE_NOTE:
            return f"needed by {name} (its x86 feature note)"
        plural = "s" if use.instructions != 1 else ""
        fplural = "s" if use.functions != 1 else ""
        return f"needed by {name} ({use.instructions:,} instruction{plural} in {use.functions:,} function{fplural})"
