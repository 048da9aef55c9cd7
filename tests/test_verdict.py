"""The pure decision: requirements x host facts -> verdict with provenance."""

from __future__ import annotations

import pytest

from cpuguard.domain import parse_domain
from cpuguard.hosts.synthetic import model_host
from cpuguard.knowledge import Knowledge
from cpuguard.policy import policy_from_data
from cpuguard.records import HostFacts, Move, Origin, Outcome
from cpuguard.render.verdict_text import one_line, render_text
from cpuguard.requirements import build_requirements
from cpuguard.verdict import decide


def domain(knowledge: Knowledge, cpu: str, name: str = "vm1") -> object:
    return parse_domain(f"<domain type='kvm'><name>{name}</name>{cpu}</domain>", "vm1.xml", knowledge)


def host(name: str, flags: set[str], vendor: str = "Intel", arch: str = "x86_64") -> HostFacts:
    return HostFacts(name, arch, vendor, "test", frozenset(flags), f"test:{name}", "snapshot")


def test_missing_features_carry_every_origin(knowledge: Knowledge) -> None:
    policy = policy_from_data({"vm": "vm1", "requires": {"features": ["AVX2", "bmi2"]}}, "p.yaml", knowledge)
    dom = parse_domain(
        "<domain><name>vm1</name><cpu mode='custom'><model>Haswell-noTSX</model></cpu></domain>", "d.xml", knowledge
    )
    req = build_requirements("vm1", dom, policy, Move.COLD, knowledge)
    verdict = decide(req, model_host("Westmere", knowledge))
    assert verdict.outcome is Outcome.BLOCK
    by_feature = {m.feature: m.origins for m in verdict.missing}
    assert by_feature["avx2"] == (
        Origin("guest-cpu", "guest CPU model Haswell-noTSX (domain XML d.xml)"),
        Origin("policy", "policy p.yaml"),
    )
    assert [m.feature for m in verdict.missing] == sorted(by_feature)
    assert verdict.vm_level == "x86-64-v3" and verdict.host_level == "x86-64-v2"


def test_exact_text_a_user_sees(knowledge: Knowledge) -> None:
    policy = policy_from_data({"vm": "pbx", "requires": {"features": ["avx2", "bmi2"]}}, "vms/pbx.yaml", knowledge)
    req = build_requirements("pbx", None, policy, Move.COLD, knowledge)
    old = model_host("Westmere", knowledge, "old")
    new = model_host("Skylake-Server-IBRS", knowledge, "new")
    verdict = decide(req, old, alternatives={"old": old, "new": new})
    assert render_text(verdict) == (
        "BLOCK  pbx must not move to old (cold start)\n"
        "  old lacks 2 features pbx needs:\n"
        "    avx2, bmi2\n"
        "        <- policy vms/pbx.yaml\n"
        "  levels: pbx uses features up to x86-64-v3; old offers all of x86-64-v2\n"
        "  cold rule: the host must offer what the guest CPU definition and workload need\n"
        "  hosts that would take pbx: new\n"
        "  policy: vms/pbx.yaml (mode enforce)\n"
        "  host facts: model:Westmere\n"
    )
    assert one_line(verdict) == (
        "cpuguard: BLOCK pbx on old (cold): missing avx2, bmi2 (policy vms/pbx.yaml); would fit on new"
    )


def test_live_passthrough_needs_what_the_guest_sees_now(knowledge: Knowledge) -> None:
    dom = domain(knowledge, "<cpu mode='host-passthrough'/>")
    source = host("src", set(knowledge.cpu_map.features_of("Skylake-Server-IBRS")) | {"nonstop_tsc", "rep_good"})
    live = build_requirements("vm1", dom, None, Move.LIVE, knowledge, source_host=source)
    cold = build_requirements("vm1", dom, None, Move.COLD, knowledge, source_host=source)
    target = model_host("Haswell-noTSX", knowledge)
    assert decide(cold, target).outcome is Outcome.ALLOW
    verdict = decide(live, target)
    assert verdict.outcome is Outcome.BLOCK
    missing = {m.feature for m in verdict.missing}
    assert {"avx512f", "avx512bw"} <= missing
    assert "nonstop_tsc" not in missing  # invtsc never migrates (cpu_map migratable='no')
    assert "rep_good" not in missing  # a Linux synthetic flag, not something a guest sees
    assert all(o.kind == "live" for m in verdict.missing for o in m.origins)


def test_live_without_known_source_says_so(knowledge: Knowledge) -> None:
    req = build_requirements("vm1", domain(knowledge, "<cpu mode='host-passthrough'/>"), None, Move.LIVE, knowledge)
    verdict = decide(req, model_host("Westmere", knowledge))
    assert verdict.outcome is Outcome.WARN  # allowed (exit 0), but not silently
    assert any("live rule only partly applied" in w for w in verdict.warnings)
    assert render_text(verdict).startswith("WARN   vm1 may move to model:Westmere (live migration or memory-image "
                                           "restore), but not everything could be checked\n")


def test_a_running_host_model_guest_carries_its_expanded_model(knowledge: Knowledge) -> None:
    """`virsh dumpxml` of a running host-model guest names the model libvirt expanded at start."""
    dom = domain(knowledge, "<cpu mode='host-model' check='partial'><model fallback='forbid'>Haswell-noTSX-IBRS"
                            "</model><feature policy='require' name='abm'/></cpu>")
    live = decide(build_requirements("vm1", dom, None, Move.LIVE, knowledge), model_host("Westmere", knowledge))
    assert live.outcome is Outcome.BLOCK
    assert {"avx", "avx2", "fma", "bmi2", "abm"} <= {m.feature for m in live.missing}
    cold = decide(build_requirements("vm1", dom, None, Move.COLD, knowledge), model_host("Westmere", knowledge))
    assert [m.feature for m in cold.missing] == ["abm"]  # host-model is computed anew at a fresh start


def test_architecture_mismatch_always_blocks(knowledge: Knowledge) -> None:
    policy = policy_from_data({"vm": "vm1", "mode": "warn"}, "p.yaml", knowledge)
    req = build_requirements("vm1", domain(knowledge, "<cpu mode='host-model'/>"), policy, Move.COLD, knowledge)
    verdict = decide(req, host("arm", set(), vendor="", arch="aarch64"))
    assert verdict.outcome is Outcome.BLOCK
    assert verdict.problems == ("architecture mismatch: the guest is x86_64, the host aarch64",)


def test_vendor_pinned_guest(knowledge: Knowledge) -> None:
    dom = domain(knowledge, "<cpu mode='custom'><model>Westmere</model><vendor>Intel</vendor></cpu>")
    req = build_requirements("vm1", dom, None, Move.COLD, knowledge)
    amd = host(
        "amd",
        set(knowledge.cpu_map.features_of("EPYC-Rome")) | set(knowledge.cpu_map.features_of("Westmere")),
        vendor="AMD",
    )
    assert decide(req, amd).outcome is Outcome.BLOCK


@pytest.mark.parametrize(
    ("mode", "outcome"), [("enforce", Outcome.BLOCK), ("warn", Outcome.WARN), ("off", Outcome.ALLOW)]
)
def test_policy_mode(knowledge: Knowledge, mode: str, outcome: Outcome) -> None:
    policy = policy_from_data({"vm": "vm1", "mode": mode, "requires": {"level": "v3"}}, "p.yaml", knowledge)
    req = build_requirements("vm1", None, policy, Move.COLD, knowledge)
    verdict = decide(req, model_host("Westmere", knowledge))
    assert verdict.outcome is outcome
    assert verdict.missing  # reported in every mode


def test_forbidden_and_disabled_features(knowledge: Knowledge) -> None:
    dom = domain(
        knowledge,
        "<cpu mode='custom'><model>Haswell-noTSX</model><feature policy='disable' name='avx2'/>"
        "<feature policy='forbid' name='avx512f'/></cpu>",
    )
    req = build_requirements("vm1", dom, None, Move.COLD, knowledge)
    assert "avx2" not in req.features
    assert decide(req, model_host("Skylake-Server-IBRS", knowledge)).forbidden_present[0].feature == "avx512f"
    assert decide(req, model_host("Haswell-noTSX", knowledge)).outcome is Outcome.ALLOW


def test_adding_a_feature_to_the_host_never_turns_allow_into_block(knowledge: Knowledge) -> None:
    policy = policy_from_data({"vm": "vm1", "requires": {"level": "v2"}}, "p.yaml", knowledge)
    req = build_requirements("vm1", None, policy, Move.COLD, knowledge)
    base = model_host("Westmere", knowledge)
    assert decide(req, base).outcome is Outcome.ALLOW
    for extra in sorted(knowledge.vocabulary.names):
        bigger = HostFacts(**{**base.__dict__, "flags": base.flags | {extra}})
        assert decide(req, bigger).outcome is Outcome.ALLOW


def test_a_domain_without_cpu_starts_anywhere_but_carries_what_it_sees_live(knowledge: Knowledge) -> None:
    """No <cpu>: QEMU's default model, minus what the host lacks (QEMU drops it quietly)."""
    dom = parse_domain("<domain type='kvm'><name>plain</name></domain>", "plain.xml", knowledge)
    assert dom.cpu.mode == "default"
    cold = build_requirements("plain", dom, None, Move.COLD, knowledge)
    for model in ("Westmere", "Opteron_G1", "Skylake-Server-IBRS"):
        assert decide(cold, model_host(model, knowledge)).outcome is Outcome.ALLOW, model
    source = model_host("EPYC", knowledge, "amd-host")
    live = build_requirements("plain", dom, None, Move.LIVE, knowledge, source_host=source)
    assert "svm" in live.features  # qemu64 has svm and the AMD host gave it
    assert decide(live, model_host("Westmere", knowledge)).outcome is Outcome.BLOCK


def test_32_bit_guest_on_64_bit_host(knowledge: Knowledge) -> None:
    dom = parse_domain(
        "<domain><name>old</name><os><type arch='i686'>hvm</type></os>"
        "<cpu mode='custom'><model>pentium3</model></cpu></domain>",
        "old.xml",
        knowledge,
    )
    req = build_requirements("old", dom, None, Move.COLD, knowledge)
    assert decide(req, model_host("Skylake-Server-IBRS", knowledge)).outcome is Outcome.ALLOW
    on_westmere = decide(req, model_host("Westmere", knowledge))  # libvirt's Westmere has no vme
    assert [m.feature for m in on_westmere.missing] == ["vme"] and not on_westmere.problems


def test_other_architecture_domain_is_blocked_not_bad_input(knowledge: Knowledge) -> None:
    dom = parse_domain(
        "<domain><name>arm</name><os><type arch='aarch64'>hvm</type></os>"
        "<cpu mode='custom'><model>cortex-a57</model><feature name='pmu'/></cpu></domain>",
        "arm.xml",
        knowledge,
    )
    req = build_requirements("arm", dom, None, Move.COLD, knowledge)
    verdict = decide(req, model_host("Westmere", knowledge))
    assert verdict.outcome is Outcome.BLOCK
    assert verdict.problems == ("architecture mismatch: the guest is aarch64, the host x86_64",)


def test_live_rule_never_asks_for_what_kvm_gives_every_guest(knowledge: Knowledge) -> None:
    """A host-model guest saw arat/x2apic/tsc-deadline because KVM provides them; any KVM host does too."""
    dom = domain(knowledge, "<cpu mode='host-model'/>")
    source = host("src", set(knowledge.cpu_map.features_of("Westmere")) | knowledge.vocabulary.hypervisor_provided)
    live = build_requirements("vm1", dom, None, Move.LIVE, knowledge, source_host=source)
    assert not live.features & knowledge.vocabulary.hypervisor_provided
    assert decide(live, model_host("Westmere", knowledge)).outcome is Outcome.ALLOW
