"""Regression tests for hostile inputs that once crashed, hung or were silently accepted.

Each test names the input and the failure it caused before the fix.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from cpuguard.config import config_from_data
from cpuguard.domain import parse_domain
from cpuguard.errors import BadInput
from cpuguard.hosts.cpuinfo import parse_cpuinfo
from cpuguard.hosts.libvirtxml import parse_capabilities
from cpuguard.hosts.snapshot import MAX_SNAPSHOT_BYTES, parse_snapshot
from cpuguard.hosts.sources import host_from_file
from cpuguard.knowledge import Knowledge
from cpuguard.policy import policy_from_data
from cpuguard.xmlsafe import parse_xml, read_bytes
from cpuguard.yamlsafe import parse_yaml
from tests.conftest import DATA


def _within(seconds: float, call: object) -> object:
    """Run ``call`` in a daemon thread; fail (instead of hanging the suite) when it blocks."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()  # type: ignore[operator]
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still blocked after {seconds} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


def test_a_fifo_without_a_writer_does_not_block(tmp_path: Path) -> None:
    # Before: open() of a FIFO nobody writes to waited forever.
    fifo = tmp_path / "host.xml"
    os.mkfifo(fifo)
    assert _within(5, lambda: read_bytes(fifo, 1024)) == b""


def test_a_device_is_refused_not_read(tmp_path: Path) -> None:
    # Before: /dev/zero was read up to the size cap, a terminal waited for input.
    with pytest.raises(BadInput, match=r"^/dev/zero: is a device or socket, expected a file$"):
        _within(5, lambda: read_bytes(Path("/dev/zero"), 1024))


def test_deeply_nested_json_snapshot_is_bad_input(knowledge: Knowledge) -> None:
    # Before: json.loads raised RecursionError, an internal error (exit 3) instead of exit 2.
    with pytest.raises(BadInput, match=r"^host\.json: not valid JSON: nested too deeply$"):
        parse_snapshot(b"[" * 100_000, "host.json", knowledge.vocabulary)


def test_snapshot_size_cap_holds_through_host_from_file(knowledge: Knowledge, tmp_path: Path) -> None:
    # Before: a snapshot read through host_from_file (the CLI's HOST argument) was capped at
    # 16 MiB, the cpuinfo limit, not at the documented 1 MiB.
    path = tmp_path / "host.json"
    flags = ", ".join(f'"f{i}"' for i in range(MAX_SNAPSHOT_BYTES // 8))
    path.write_text(f'{{"cpuguard_snapshot": 1, "arch": "x86_64", "flags": [{flags}]}}')
    with pytest.raises(BadInput, match=r"snapshot is larger than 1048576 bytes"):
        host_from_file(path, knowledge)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("vm: " + "1" * 5000 + "\n", "invalid YAML value: Exceeds the limit (4300 digits)"),
        ("vm: 2024-13-45\n", "invalid YAML value: month must be in 1..12"),
        ("vm: 2024-02-30\n", "invalid YAML value: day is out of range for month"),
    ],
)
def test_yaml_values_python_cannot_build_are_bad_input(text: str, problem: str) -> None:
    # Before: ValueError from int()/date() escaped as an internal error (exit 3).
    with pytest.raises(BadInput) as info:
        parse_yaml(text, "pbx01.yaml")
    assert str(info.value).startswith(f"pbx01.yaml: {problem}")


def _alias_lattice(width: int) -> str:
    """A policy whose aliases make ``width ** 3`` examples out of ``3 * width`` lines."""
    examples = ", ".join(["a"] * width)
    text = "vm: pbx01\nbinaries:\n- &bin\n  path: /x\n  required:\n"
    text += f"  - &item {{feature: avx2, examples: [{examples}]}}\n"
    return text + "  - *item\n" * (width - 1) + "- *bin\n" * (width - 1)


def test_yaml_alias_bomb_is_refused_quickly(knowledge: Knowledge) -> None:
    # Before: 3 KiB of aliases (width 150: 3.4 million examples) kept validation busy for
    # about 4 s; width 1,000 (20 KiB, a billion examples) for some 20 minutes and more memory
    # than the machine has -- a hang in the libvirt hook.
    text = _alias_lattice(150)
    assert len(text) < 4096
    started = time.monotonic()
    with pytest.raises(BadInput, match=r"^pbx01\.yaml: YAML aliases expand to more than 1,000,000 values"):
        parse_yaml(text, "pbx01.yaml")
    assert time.monotonic() - started < 2


def test_yaml_aliases_within_the_cap_still_work(knowledge: Knowledge) -> None:
    policy = policy_from_data(parse_yaml(_alias_lattice(20), "pbx01.yaml"), "pbx01.yaml", knowledge)
    assert len(policy.binaries) == 20 and all(len(b.required) == 20 for b in policy.binaries)


@pytest.mark.parametrize("text", ["vm: pbx01\nmode: &a [*a]\n", "vm: pbx01\nrequires: &r {features: [], x: *r}\n"])
def test_recursive_yaml_alias_is_refused(text: str) -> None:
    # Before: the recursive list reached the schema check, which printed it as [[...]].
    with pytest.raises(BadInput, match=r"^pbx01\.yaml: invalid YAML: an alias refers to a node that contains it$"):
        parse_yaml(text, "pbx01.yaml")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
def test_config_numbers_must_be_finite(value: str) -> None:
    # Before: deadline_seconds: .nan passed "minimum: 0.1" (every comparison with NaN is false)
    # and .inf was accepted as a deadline that never comes.
    with pytest.raises(BadInput, match=r"^config\.yaml: deadline_seconds: expected a finite number, got "):
        config_from_data(parse_yaml(f"deadline_seconds: {value}\n", "config.yaml"), Path("config.yaml"))


def test_unknown_xml_encoding_is_bad_input() -> None:
    # Before: expat asked Python for the codec and LookupError escaped as an internal error.
    with pytest.raises(BadInput, match=r"^d\.xml: malformed XML: unknown encoding: x-klingon$"):
        parse_xml(b"<?xml version='1.0' encoding='x-klingon'?><domain/>", "d.xml")


_DOMAIN = "<domain type='kvm'><name>pbx01</name><os><type arch='x86_64'>hvm</type></os>{cpu}</domain>"


@pytest.mark.parametrize(
    ("cpu", "problem"),
    [
        ("<cpu mode='host-passthrough'/><cpu><model>qemu64</model></cpu>", "more than one <cpu> element"),
        ("<cpu><model>Skylake-Server</model><model>qemu64</model></cpu>", "more than one <model> in <cpu>"),
    ],
)
def test_duplicated_domain_cpu_elements_are_refused(knowledge: Knowledge, cpu: str, problem: str) -> None:
    # Before: the first <cpu> / <model> silently won; the second could hide a host-passthrough guest.
    with pytest.raises(BadInput, match=f"^d\\.xml: {problem}"):
        parse_domain(_DOMAIN.format(cpu=cpu), "d.xml", knowledge)


def test_duplicated_capabilities_elements_are_refused(knowledge: Knowledge) -> None:
    # Before: capabilities used the first <model>, domcapabilities the *last* host-model mode.
    cpu = "<arch>x86_64</arch><model>Westmere</model><model>EPYC</model>"
    caps = f"<capabilities><host><cpu>{cpu}</cpu></host></capabilities>"
    with pytest.raises(BadInput, match=r"^c\.xml: more than one <model> in <host><cpu>$"):
        parse_capabilities(caps, "c.xml", knowledge.vocabulary, knowledge.cpu_map)
    mode = "<mode name='host-model' supported='yes'><model>{}</model></mode>"
    modes = mode.format("Westmere") + mode.format("EPYC")
    domcaps = f"<domainCapabilities><arch>x86_64</arch><cpu>{modes}</cpu></domainCapabilities>"
    with pytest.raises(BadInput, match=r"^c\.xml: more than one host-model CPU mode in domain capabilities$"):
        parse_capabilities(domcaps, "c.xml", knowledge.vocabulary, knowledge.cpu_map)


def test_duplicate_json_keys_in_a_snapshot_are_refused(knowledge: Knowledge) -> None:
    # Before: json kept the last "flags" silently; the first list could be the one a reviewer read.
    data = b'{"cpuguard_snapshot": 1, "arch": "x86_64", "flags": ["avx512f"], "flags": []}'
    with pytest.raises(BadInput, match=r"^host\.json: not valid JSON: duplicate key 'flags'$"):
        parse_snapshot(data, "host.json", knowledge.vocabulary)


@pytest.mark.parametrize("version", ["true", "1.0"])
def test_snapshot_format_must_be_the_integer_1(knowledge: Knowledge, version: str) -> None:
    # Before: true and 1.0 compare equal to 1 and were taken for format 1.
    data = f'{{"cpuguard_snapshot": {version}, "arch": "x86_64", "flags": []}}'.encode()
    with pytest.raises(BadInput, match=r"^host\.json: unsupported snapshot format"):
        parse_snapshot(data, "host.json", knowledge.vocabulary)


def test_lone_surrogate_in_a_snapshot_is_refused(knowledge: Knowledge) -> None:
    # Before: "\udc00" in model_name was accepted; `cpuguard host show` then died printing it (exit 3).
    data = b'{"cpuguard_snapshot": 1, "arch": "x86_64", "flags": [], "model_name": "\\udc00"}'
    with pytest.raises(BadInput, match=r"^host\.json: not valid JSON: a string holds a lone UTF-16 surrogate$"):
        parse_snapshot(data, "host.json", knowledge.vocabulary)
    pair = b'{"cpuguard_snapshot": 1, "arch": "x86_64", "flags": [], "model_name": "\\ud83d\\ude00"}'
    assert parse_snapshot(pair, "host.json", knowledge.vocabulary).model_name == "\N{GRINNING FACE}"


def test_lone_surrogate_in_yaml_is_refused() -> None:
    # Before: an inventory host named "\udc00" was accepted; printing its name failed (exit 3).
    with pytest.raises(BadInput, match=r"^inventory\.yaml: invalid YAML: a string holds a lone UTF-16 surrogate$"):
        parse_yaml('hosts: {"\\udc00": {source: "model:Westmere"}}\n', "inventory.yaml")
    assert parse_yaml('a: "\\U0001F600"\n', "x.yaml") == {"a": "\N{GRINNING FACE}"}


def test_cpuinfo_cut_in_its_flags_line_is_refused(knowledge: Knowledge) -> None:
    # Before: a copy cut after "flags : fpu vme de" read as a CPU with three features -- a host
    # that would refuse good moves, or accept a guest whose forbidden feature was cut off.
    text = (DATA / "linux-debian12-sapphirerapids-cpuinfo.txt").read_text()
    cut = text[: text.rindex("flags") + 30]
    with pytest.raises(BadInput, match=r"^cpuinfo: ends in the middle of a 'flags' line, without a newline"):
        parse_cpuinfo(cut, "cpuinfo", knowledge.vocabulary)
    # An Ansible "stdout" copy loses only the final newline, after "power management:": still fine.
    assert parse_cpuinfo(text.rstrip("\n"), "cpuinfo", knowledge.vocabulary).flags == parse_cpuinfo(
        text, "cpuinfo", knowledge.vocabulary
    ).flags


def test_cpuinfo_with_a_cpu_without_features_is_refused(knowledge: Knowledge) -> None:
    # Before (found by Hypothesis): an ARM-style copy whose second CPU had no Features line read
    # as a host with no features at all, where the x86 branch refuses an empty 'flags' line.
    text = "processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n\nprocessor\t: 1\n"
    with pytest.raises(BadInput, match=r"^cpuinfo: empty 'Features' line$"):
        parse_cpuinfo(text, "cpuinfo", knowledge.vocabulary)


def test_deeply_nested_yaml_flow_collections_are_refused_quickly() -> None:
    # Before (found by fuzzing: a 20 KiB input timed out): PyYAML's scanner walks every open
    # flow level for every token, so 120 KiB of 150-deep brackets took about 5 s to read.
    text = "".join(f"k{i}: {'[' * 150}{']' * 150}\n" for i in range(400))
    started = time.monotonic()
    with pytest.raises(BadInput, match=r"^p\.yaml: invalid YAML: \[\.\.\.\] or \{\.\.\.\} nested more than 20 deep$"):
        parse_yaml(text, "p.yaml")
    assert time.monotonic() - started < 0.5
    assert parse_yaml("a: " + "[" * 20 + "]" * 20, "p.yaml") == {"a": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}
