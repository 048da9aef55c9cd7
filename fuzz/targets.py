"""Coverage-guided fuzz targets, one per parser, for atheris (libFuzzer for Python).

Each target feeds the fuzzer's bytes to one reader. A one-line refusal (BadInput, or
ElfError for the ELF reader) is the expected outcome for junk; anything else -- another
exception, a message spanning lines, a run past libFuzzer's -timeout, memory past its
-rss_limit_mb -- is a crash. ``fuzz/run`` runs them all for a bounded time; each
``fuzz/fuzz_<name>.py`` runs one (``python fuzz/fuzz_domain.py -max_total_time=600``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHERE = "fuzz-input"


def _one_line(exc: Exception) -> None:
    text = str(exc)
    if "\n" in text or "\r" in text or not text.strip():
        raise AssertionError(f"refusal is not one line: {text!r}") from exc


@cache
def _knowledge():  # type: ignore[no-untyped-def]
    from cpuguard.knowledge import load_knowledge

    return load_knowledge()


def _xml(data: bytes) -> None:
    from cpuguard.xmlsafe import parse_xml

    parse_xml(data, WHERE)


def _domain(data: bytes) -> None:
    from cpuguard.domain import parse_domain

    parse_domain(data, WHERE, _knowledge())


def _capabilities(data: bytes) -> None:
    from cpuguard.hosts.libvirtxml import parse_capabilities

    parse_capabilities(data, WHERE, _knowledge().vocabulary, _knowledge().cpu_map)


def _cpuinfo(data: bytes) -> None:
    from cpuguard.errors import BadInput
    from cpuguard.hosts.cpuinfo import parse_cpuinfo

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(WHERE, "not UTF-8") from None  # host_from_file refuses these before parsing
    parse_cpuinfo(text, WHERE, _knowledge().vocabulary)


def _snapshot(data: bytes) -> None:
    from cpuguard.hosts.snapshot import parse_snapshot

    parse_snapshot(data, WHERE, _knowledge().vocabulary)


def _yaml(data: bytes) -> None:
    from cpuguard.yamlsafe import parse_yaml

    parse_yaml(data, WHERE)


def _policy(data: bytes) -> None:
    from cpuguard.policy import policy_from_data
    from cpuguard.yamlsafe import parse_yaml

    policy_from_data(parse_yaml(data, WHERE), WHERE, _knowledge())


def _config(data: bytes) -> None:
    from cpuguard.config import config_from_data
    from cpuguard.yamlsafe import parse_yaml

    config_from_data(parse_yaml(data, WHERE), Path(WHERE))


@cache
def _inventory_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="cpuguard-fuzz-inventory-", dir=_scratch_parent()))


def _scratch_parent() -> str | None:
    shm = Path("/dev/shm")  # noqa: S108 - only a parent for mkdtemp, which makes a private directory
    return str(shm) if shm.is_dir() else None


def _inventory(data: bytes) -> None:
    from cpuguard.inventory import read_inventory

    directory = _inventory_dir()
    (directory / "inventory.yaml").write_bytes(data)
    read_inventory(directory)


def _elf(data: bytes) -> None:
    from cpuguard.scan import elf
    from cpuguard.scan.buildinfo import build_notes
    from cpuguard.scan.notes import read_properties
    from cpuguard.scan.program import read_program

    image = elf.ElfFile(elf.BytesSource(data))
    program = read_program(image)
    read_properties(image)
    build_notes(image, program.symbols)
    image.dynamic_strings()


def _refusals(name: str) -> tuple[type[Exception], ...]:
    from cpuguard.errors import BadInput

    if name == "elf":
        from cpuguard.scan.elf import ElfError

        return (ElfError,)
    return (BadInput,)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "xml": _xml,
    "domain": _domain,
    "capabilities": _capabilities,
    "cpuinfo": _cpuinfo,
    "snapshot": _snapshot,
    "yaml": _yaml,
    "policy": _policy,
    "config": _config,
    "inventory": _inventory,
    "elf": _elf,
}

#: Which hostile-catalog readers' cases seed which target (besides the real samples).
_CATALOG_SEEDS = {
    "xml": ("domain-xml", "capabilities-xml", "domcapabilities-xml"),
    "domain": ("domain-xml",),
    "capabilities": ("capabilities-xml", "domcapabilities-xml"),
    "cpuinfo": ("cpuinfo",),
    "snapshot": ("snapshot-json",),
    "yaml": ("policy-yaml", "inventory-yaml", "config-yaml"),
    "policy": ("policy-yaml",),
    "config": ("config-yaml",),
    "inventory": ("inventory-yaml",),
    "elf": (),
}

MAX_SEED_BYTES = 16 * 1024  # also -max_len: instrumented PyYAML reads ~10 KiB/s at worst


def seeds(name: str) -> Iterator[bytes]:
    """Starting inputs: the real samples of the reader and the small hostile-catalog inputs."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.hostile.catalog import CATALOG
    from tests.hostile.readers import samples

    for reader in _CATALOG_SEEDS[name]:
        for _label, data in samples(reader):
            yield data
        for case in CATALOG[reader]:
            if len(case.data) <= MAX_SEED_BYTES:
                yield case.data
    if name == "elf":
        for path in ("/usr/bin/true", "/usr/lib/x86_64-linux-gnu/libz.so.1"):
            if Path(path).is_file():
                yield Path(path).read_bytes()[:MAX_SEED_BYTES]


def checked(name: str) -> Callable[[bytes], None]:
    """The target wrapped so that a proper refusal passes and anything else is a crash."""
    target = TARGETS[name]
    refusals = _refusals(name)

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except refusals as exc:
            _one_line(exc)

    return one_input


def fuzz_main(name: str) -> None:
    """Entry point of ``fuzz/fuzz_<name>.py``: instrument cpuguard, warm up, hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["cpuguard", "yaml", "defusedxml", "json"]):
        import cpuguard.config
        import cpuguard.domain
        import cpuguard.hosts.cpuinfo
        import cpuguard.hosts.libvirtxml
        import cpuguard.hosts.snapshot
        import cpuguard.inventory
        import cpuguard.policy
        import cpuguard.schema
        import cpuguard.xmlsafe
        import cpuguard.yamlsafe

        if name == "elf":
            import cpuguard.scan.buildinfo
            import cpuguard.scan.notes
            import cpuguard.scan.program  # noqa: F401
    _knowledge()  # load cpu_map and the vocabulary once, outside the measured executions
    atheris.Setup(sys.argv, checked(name))
    atheris.Fuzz()


def write_seeds(name: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for count, data in enumerate(seeds(name), 1):
        (directory / f"seed-{count:04d}").write_bytes(data)
    return count


if __name__ == "__main__":
    print(json.dumps(sorted(TARGETS)))
