"""Load libvirt's cpu_map (x86 part) into plain records.

libvirt describes CPU features (with their CPUID bits, aliases and whether
they migrate) in ``x86_features.xml`` and named guest CPU models in
``x86_<Model>.xml``, all listed by ``index.xml``. See
https://libvirt.org/formatdomain.html#cpu-model-and-topology and
libvirt's ``src/cpu_map/``.

The snapshot bundled in ``cpuguard/data/cpu_map.json`` holds the newest
libvirt's cpu_map from the Debian archive (``scripts/update-cpu-map``; the
versions are in its ``source``), so domain XML written by a newer libvirt than
the installed one still names known models and features. When
``/usr/share/libvirt/cpu_map`` is present it is merged in and wins for every
name it defines: the installed libvirt is the one that runs guests here.
Names here are libvirt's spelling; the vocabulary turns them into canonical
names.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.xmlsafe import read_xml

SYSTEM_CPU_MAP = Path("/usr/share/libvirt/cpu_map")
BUNDLED_SNAPSHOT = Path(__file__).with_name("data") / "cpu_map.json"


@dataclass(frozen=True)
class FeatureDef:
    name: str
    aliases: tuple[tuple[str, str], ...] = ()  # (alias, source) e.g. ("cqm", "linux")
    cpuid: tuple[tuple[str, str], ...] = ()  # sorted attribute pairs of <cpuid>
    msr: tuple[tuple[str, str], ...] = ()
    migratable: bool = True

    @property
    def vmx_capability(self) -> bool:
        """A bit of the VMX capability MSRs (IA32_VMX_BASIC 0x480 .. IA32_VMX_VMFUNC 0x491, Intel SDM
        vol. 3 appendix A): what nested guests may use, the ``vmx-*`` features of newer cpu_maps."""
        index = dict(self.msr).get("index")
        try:
            return index is not None and 0x480 <= int(index, 16) <= 0x491
        except ValueError:
            return False


@dataclass(frozen=True)
class ModelDef:
    name: str
    vendor: str | None
    features: frozenset[str]  # own features, libvirt spelling (before inheritance)
    parents: tuple[str, ...] = ()
    signatures: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class CpuMapData:
    source: str
    features: Mapping[str, FeatureDef]
    models: Mapping[str, ModelDef]
    vendors: Mapping[str, str] = field(default_factory=dict)  # name -> CPUID vendor string

    def expanded(self, model: str) -> frozenset[str]:
        """All features of ``model`` including those of the models it inherits."""
        seen: set[str] = set()
        result: set[str] = set()
        stack = [model]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            definition = self.models[name]
            result |= definition.features
            stack.extend(definition.parents)
        return frozenset(result)


def _parse_feature(element: ET.Element) -> FeatureDef:
    aliases = tuple((a.get("name", ""), a.get("source", "")) for a in element.findall("alias") if a.get("name"))
    cpuid_el = element.find("cpuid")
    msr_el = element.find("msr")
    return FeatureDef(
        name=element.get("name", ""),
        aliases=aliases,
        cpuid=tuple(sorted(cpuid_el.attrib.items())) if cpuid_el is not None else (),
        msr=tuple(sorted(msr_el.attrib.items())) if msr_el is not None else (),
        migratable=element.get("migratable", "yes") != "no",
    )


def _parse_model(element: ET.Element) -> ModelDef:
    vendor_el = element.find("vendor")
    sigs: list[tuple[int, int]] = []
    for sig in element.findall("signature"):
        try:
            sigs.append((int(sig.get("family", "0")), int(sig.get("model", "0"))))
        except ValueError:
            continue
    return ModelDef(
        name=element.get("name", ""),
        vendor=vendor_el.get("name") if vendor_el is not None else None,
        # removed='yes' marks a feature libvirt dropped from the model but keeps listed
        # for compatibility of old definitions; it is not part of the model any more.
        # (added='yes', in newer cpu_maps, marks one added later: it is part of the model.)
        features=frozenset(f.get("name", "") for f in element.findall("feature") if f.get("removed") != "yes"),
        parents=tuple(m.get("name", "") for m in element.findall("model")),
        signatures=tuple(sigs),
    )


def parse_cpu_map_dir(directory: Path) -> CpuMapData:
    """Parse the x86 part of a libvirt cpu_map directory."""
    index = read_xml(directory / "index.xml", root="cpus")
    features: dict[str, FeatureDef] = {}
    models: dict[str, ModelDef] = {}
    vendors: dict[str, str] = {}
    for arch in index.findall("arch"):
        if arch.get("name") != "x86":
            continue
        # libvirt >= 10 puts the model includes into named <group>s
        for include in arch.findall(".//include"):
            filename = include.get("filename", "")
            if not filename or "/" in filename:
                raise BadInput(directory / "index.xml", f"bad include {filename!r}")
            doc = read_xml(directory / filename, root="cpus")
            for element in doc.findall("feature"):
                feature = _parse_feature(element)
                features[feature.name] = feature
            for element in doc.findall("model"):
                model = _parse_model(element)
                models[model.name] = model
            for element in doc.findall("vendor"):
                vendors[element.get("name", "")] = element.get("string", "")
    if not features or not models:
        raise BadInput(directory, "no x86 features or models found in this cpu_map")
    for model in models.values():
        for parent in model.parents:
            if parent not in models:
                raise BadInput(directory, f"model {model.name} inherits unknown model {parent}")
    return CpuMapData(str(directory), features, models, vendors)


def to_snapshot(data: CpuMapData, source: str) -> dict[str, Any]:
    """The bundled JSON form (see ``scripts/update-cpu-map``); ``source`` names the libvirt versions."""
    return {
        "source": source,
        "features": {
            f.name: {
                "aliases": [list(a) for a in f.aliases],
                "cpuid": dict(f.cpuid),
                "msr": dict(f.msr),
                "migratable": f.migratable,
            }
            for f in sorted(data.features.values(), key=lambda f: f.name)
        },
        "models": {
            m.name: {
                "vendor": m.vendor,
                "features": sorted(m.features),
                "parents": list(m.parents),
                "signatures": [list(s) for s in m.signatures],
            }
            for m in sorted(data.models.values(), key=lambda m: m.name)
        },
        "vendors": dict(sorted(data.vendors.items())),
    }


def from_snapshot(raw: Mapping[str, Any], where: Path) -> CpuMapData:
    try:
        features = {
            name: FeatureDef(
                name,
                tuple((a[0], a[1]) for a in f["aliases"]),
                tuple(sorted(f["cpuid"].items())),
                tuple(sorted(f["msr"].items())),
                bool(f["migratable"]),
            )
            for name, f in raw["features"].items()
        }
        models = {
            name: ModelDef(
                name,
                m["vendor"],
                frozenset(m["features"]),
                tuple(m["parents"]),
                tuple((s[0], s[1]) for s in m["signatures"]),
            )
            for name, m in raw["models"].items()
        }
        return CpuMapData(str(raw["source"]), features, models, dict(raw["vendors"]))
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise BadInput(where, f"not a cpu_map snapshot ({exc})") from None


def merge_cpu_maps(first: CpuMapData, second: CpuMapData) -> CpuMapData:
    """``first`` with the features, models and vendors only ``second`` defines (pure).

    Where both define a name, ``first`` wins whole: a model is never a mix
    of two libvirt versions' definitions.
    """
    return CpuMapData(
        f"{first.source} + names only in {second.source}",
        {**second.features, **first.features},
        {**second.models, **first.models},
        {**second.vendors, **first.vendors},
    )


def read_snapshot(path: Path = BUNDLED_SNAPSHOT) -> CpuMapData:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(path, f"cannot read bundled cpu_map snapshot: {exc}") from None
    return from_snapshot(raw, path)


@cache
def load_cpu_map_data(directory: Path | None = SYSTEM_CPU_MAP, snapshot: Path = BUNDLED_SNAPSHOT) -> CpuMapData:
    """The installed cpu_map in ``directory`` (if present) merged with the bundled snapshot."""
    bundled = read_snapshot(snapshot)
    if directory is not None and (directory / "index.xml").is_file():
        return merge_cpu_maps(parse_cpu_map_dir(directory), bundled)
    return bundled
