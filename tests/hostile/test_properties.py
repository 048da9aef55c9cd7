"""Properties of the parsers and the decision, checked by Hypothesis on generated inputs.

The decision: more features on a host never turn "allow" into "block" (unless the guest
forbids that feature); the verdict does not depend on the order or spelling of features;
the missing set is exactly needs minus offers. The parsers: arbitrary bytes are read or
refused in one line; what cpuguard writes, it reads back unchanged.
"""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpuguard.config import config_from_data
from cpuguard.domain import parse_domain
from cpuguard.errors import BadInput
from cpuguard.hosts.cpuinfo import parse_cpuinfo
from cpuguard.hosts.libvirtxml import parse_capabilities
from cpuguard.hosts.snapshot import parse_snapshot, snapshot_to_dict
from cpuguard.knowledge import Knowledge, load_knowledge
from cpuguard.policy import policy_from_data
from cpuguard.records import HostFacts, Move, Need, Origin, Outcome, Requirements
from cpuguard.verdict import decide
from cpuguard.xmlsafe import parse_xml
from cpuguard.yamlsafe import parse_yaml
from tests.hostile.tally import tried

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def _knowledge() -> Knowledge:
    return load_knowledge()


@cache
def _features() -> list[str]:
    """Canonical names that libvirt models (so each has a libvirt spelling too)."""
    return sorted(_knowledge().vocabulary.to_libvirt)


features = st.sampled_from(_features()) if _features() else st.nothing()
feature_sets = st.frozensets(features, max_size=40)
ORIGINS = [Origin("policy", "policy p.yaml"), Origin("guest-cpu", "model X"), Origin("live", "running guest")]


@st.composite
def requirements(draw: st.DrawFn) -> Requirements:
    needs = draw(st.lists(st.tuples(features, st.sampled_from(ORIGINS)), max_size=60))
    forbidden = draw(st.lists(features, max_size=3))
    return Requirements(
        vm="vm",
        arch="x86_64",
        move=draw(st.sampled_from(list(Move))),
        needs=tuple(Need(f, o) for f, o in needs),
        forbidden=tuple(Need(f, Origin("guest-cpu", "forbidden")) for f in forbidden),
        vendor=draw(st.sampled_from([None, "Intel"])),
        mode=draw(st.sampled_from(["enforce", "warn", "off"])),
    )


def host(flags: frozenset[str], vendor: str = "Intel") -> HostFacts:
    return HostFacts("h", "x86_64", vendor, "m", flags, "test", "snapshot")


# -- the decision -----------------------------------------------------------------------------


@SETTINGS
@given(requirements(), feature_sets, features)
def test_an_added_feature_never_turns_allow_into_block(req: Requirements, flags: frozenset[str], extra: str) -> None:
    before = decide(req, host(flags))
    after = decide(req, host(flags | {extra}))
    if extra in {n.feature for n in req.forbidden}:
        if req.mode == "enforce":
            assert after.outcome is Outcome.BLOCK  # the guest forbids exactly this feature
        return
    if before.outcome is Outcome.ALLOW:
        assert after.outcome is Outcome.ALLOW
    assert {m.feature for m in after.missing} <= {m.feature for m in before.missing}


@SETTINGS
@given(requirements(), feature_sets)
def test_missing_is_exactly_needs_minus_offers(req: Requirements, flags: frozenset[str]) -> None:
    verdict = decide(req, host(flags))
    needed = {n.feature for n in req.needs}
    assert [m.feature for m in verdict.missing] == sorted(needed - flags)
    for item in verdict.missing:
        assert set(item.origins) == {n.origin for n in req.needs if n.feature == item.feature}
    if not verdict.missing and not verdict.forbidden_present:
        assert verdict.outcome is Outcome.ALLOW


@SETTINGS
@given(requirements(), feature_sets, st.randoms(use_true_random=False))
def test_verdict_is_independent_of_order(req: Requirements, flags: frozenset[str], rnd: random.Random) -> None:
    needs = list(req.needs)
    rnd.shuffle(needs)
    shuffled = Requirements(req.vm, req.arch, req.move, tuple(needs), req.forbidden, req.vendor, req.mode)
    assert decide(shuffled, host(flags)) == decide(req, host(flags))


def _respell(name: str, rnd: random.Random) -> str:
    """Another spelling of a canonical feature: libvirt's, an alias, other case and separators."""
    vocabulary = _knowledge().vocabulary
    choices = [name, vocabulary.libvirt_name(name) or name, *vocabulary.spellings(name)]
    spelled = rnd.choice(choices)
    spelled = "".join(c.upper() if rnd.random() < 0.5 else c for c in spelled)
    return spelled.replace("_", rnd.choice(["_", "-", "."]))


@SETTINGS
@given(feature_sets, feature_sets, st.randoms(use_true_random=False))
def test_verdict_is_independent_of_spelling(
    wanted: frozenset[str], offered: frozenset[str], rnd: random.Random
) -> None:
    knowledge = _knowledge()
    raw_policy = {"vm": "pbx01", "requires": {"features": [_respell(f, rnd) for f in sorted(wanted)]}}
    policy = policy_from_data(raw_policy, "pbx01.yaml", knowledge)
    assert policy.features == wanted
    flags = [_respell(f, rnd) for f in offered]
    rnd.shuffle(flags)
    data = json.dumps({"cpuguard_snapshot": 1, "arch": "x86_64", "vendor": "Intel", "flags": flags}).encode()
    facts = parse_snapshot(data, "host.json", knowledge.vocabulary, name="h")
    assert facts.flags == offered
    tried("policy-yaml")
    tried("snapshot-json")


# -- the parsers on arbitrary input ------------------------------------------------------------


def _refused_in_one_line(exc: BadInput, where: str) -> None:
    assert "\n" not in str(exc)
    assert str(exc).startswith(f"{where}: ")


@SETTINGS
@given(st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
def test_xml_readers_read_or_refuse_any_bytes(data: bytes) -> None:
    knowledge = _knowledge()
    for call in (
        lambda: parse_xml(data, "x.xml"),
        lambda: parse_domain(data, "x.xml", knowledge),
        lambda: parse_capabilities(data, "x.xml", knowledge.vocabulary, knowledge.cpu_map),
    ):
        try:
            call()
        except BadInput as exc:
            _refused_in_one_line(exc, "x.xml")
    tried("domain-xml")
    tried("capabilities-xml")


# XML made of the elements the readers look at, so the parsers get past well-formedness.
_names = st.sampled_from(["domain", "name", "cpu", "model", "feature", "vendor", "arch", "host", "os", "type",
                          "capabilities", "domainCapabilities", "mode"])
_attrs = st.dictionaries(st.sampled_from(["name", "mode", "policy", "supported", "arch", "fallback"]),
                         st.sampled_from(["host-model", "custom", "require", "disable", "forbid", "yes", "no",
                                          "avx2", "Westmere", "x86_64", "sse4.2", ""]), max_size=3)
_element: st.SearchStrategy[str] = st.recursive(
    st.sampled_from(["Westmere", "x86_64", "pbx01", "avx2", "Skylake-Server-IBRS", ""]),
    lambda inner: st.builds(
        lambda tag, attrs, kids: f"<{tag}{''.join(f' {k}={v!r}' for k, v in attrs.items())}>{''.join(kids)}</{tag}>",
        _names, _attrs, st.lists(inner, max_size=4),
    ),
    max_leaves=25,
)


@SETTINGS
@given(_element)
def test_structured_xml_is_read_or_refused_in_one_line(text: str) -> None:
    knowledge = _knowledge()
    for call in (
        lambda: parse_domain(text, "x.xml", knowledge),
        lambda: parse_capabilities(text, "x.xml", knowledge.vocabulary, knowledge.cpu_map),
    ):
        try:
            call()
        except BadInput as exc:
            _refused_in_one_line(exc, "x.xml")
    tried("domain-xml")
    tried("capabilities-xml")


_yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.sampled_from(["avx2", "pbx01"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["vm", "mode", "requires", "features", "level", "model", "binaries", "hosts", "vms",
                         "path", "required", "feature", "on_error", "migrate", "deadline_seconds", "x"]),
        inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(_yaml_values | st.text(max_size=300))
def test_yaml_readers_read_or_refuse_any_document(value: object) -> None:
    text = value if isinstance(value, str) else yaml.safe_dump(value)
    knowledge = _knowledge()
    try:
        raw = parse_yaml(text, "p.yaml")
    except BadInput as exc:
        _refused_in_one_line(exc, "p.yaml")
        return
    for call in (
        lambda: policy_from_data(raw, "p.yaml", knowledge),
        lambda: config_from_data(raw, Path("p.yaml")),
    ):
        try:
            call()
        except BadInput as exc:
            _refused_in_one_line(exc, "p.yaml")
    tried("policy-yaml")
    tried("config-yaml")


@SETTINGS
@given(st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
def test_snapshot_reader_reads_or_refuses_any_bytes(data: bytes) -> None:
    try:
        parse_snapshot(data, "s.json", _knowledge().vocabulary)
    except BadInput as exc:
        _refused_in_one_line(exc, "s.json")
    tried("snapshot-json")


_cpuinfo_lines = st.lists(
    st.one_of(
        st.just(""),
        st.builds(lambda n: f"processor\t: {n}", st.integers(0, 8)),
        st.builds(lambda fs: "flags\t\t: " + " ".join(fs), st.lists(features | st.text(max_size=8), max_size=30)),
        st.sampled_from(
            ["vendor_id\t: GenuineIntel", "model name\t: Xeon", "Features\t: fp asimd", "CPU implementer\t: 0x41"]
        ),
        st.text(max_size=40),
    ),
    max_size=30,
)


@SETTINGS
@given(_cpuinfo_lines, st.booleans())
def test_cpuinfo_reader_reads_or_refuses_any_text(lines: list[str], final_newline: bool) -> None:
    text = "\n".join(lines) + ("\n" if final_newline else "")
    try:
        facts = parse_cpuinfo(text, "cpuinfo", _knowledge().vocabulary)
    except BadInput as exc:
        _refused_in_one_line(exc, "cpuinfo")
    else:
        assert facts.flags, "an accepted cpuinfo copy must offer features"
    tried("cpuinfo")


# -- round trips: what cpuguard writes, it reads back -----------------------------------------


@SETTINGS
@given(feature_sets, st.text(max_size=30), st.sampled_from(["Intel", "AMD", ""]))
def test_snapshot_round_trip(flags: frozenset[str], model_name: str, vendor: str) -> None:
    facts = HostFacts("node3", "x86_64", vendor, model_name, flags, "model:Westmere", "model")
    text = json.dumps(snapshot_to_dict(facts), indent=2)
    back = parse_snapshot(text.encode(), "s.json", _knowledge().vocabulary)
    assert (back.name, back.arch, back.vendor, back.model_name, back.flags) == (
        "node3", "x86_64", vendor, model_name, flags,
    )


@SETTINGS
@given(feature_sets, st.sampled_from(["enforce", "warn", "off"]), st.sampled_from([None, "x86-64-v2", "x86-64-v3"]))
def test_policy_round_trip(wanted: frozenset[str], mode: str, level: str | None) -> None:
    requires: dict[str, object] = {"features": sorted(wanted)}
    if level:
        requires["level"] = level
    text = yaml.safe_dump({"vm": "pbx01", "mode": mode, "requires": requires})
    policy = policy_from_data(parse_yaml(text, "pbx01.yaml"), "pbx01.yaml", _knowledge(), vm="pbx01")
    assert (policy.features, policy.mode, policy.level) == (wanted, mode, level)


@SETTINGS
@given(feature_sets, feature_sets, st.sampled_from(["Westmere", "Haswell-noTSX", "qemu64", None]))
def test_domain_round_trip(required: frozenset[str], disabled: frozenset[str], model: str | None) -> None:
    vocabulary = _knowledge().vocabulary
    elements = [f"<feature policy='require' name='{vocabulary.libvirt_name(f)}'/>" for f in sorted(required)]
    elements += [f"<feature policy='disable' name='{vocabulary.libvirt_name(f)}'/>" for f in sorted(disabled)]
    model_xml = f"<model>{model}</model>" if model else ""
    xml = f"<domain type='kvm'><name>pbx01</name><cpu mode='custom'>{model_xml}{''.join(elements)}</cpu></domain>"
    domain = parse_domain(xml, "d.xml", _knowledge())
    assert domain.cpu.required == required and domain.cpu.disabled == disabled
    assert domain.cpu.model == (model or (None if required or disabled else "qemu64"))
