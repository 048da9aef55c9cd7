"""Properties of the advice over random fleets (tests/planning/randomfleet.py).

The advised ``<cpu>`` is rendered, pasted into a domain definition and read back
the way ``check --cold`` reads a domain, so the properties hold for what a user pastes.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpuguard.advice.advise import advise, hosts_after
from cpuguard.domain import parse_domain
from cpuguard.knowledge import Knowledge, load_knowledge
from cpuguard.planning.records import VmSpec, is_safe
from cpuguard.records import Domain, Move, Outcome
from cpuguard.render.advice_text import advised_cpu_xml
from cpuguard.requirements import build_requirements
from cpuguard.verdict import decide
from tests.planning.randomfleet import random_hosts, random_vms

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pasted(vm: VmSpec, cpu_xml: str, knowledge: Knowledge) -> Domain:
    arch = vm.domain.arch if vm.domain is not None else "x86_64"
    text = f"<domain type='kvm'><name>{vm.name}</name><os><type arch='{arch}'>hvm</type></os>{cpu_xml}</domain>"
    return parse_domain(text, f"domains/{vm.name}.xml", knowledge)


@SETTINGS
@given(st.randoms(use_true_random=False), st.integers(min_value=1, max_value=8))
def test_advice_over_random_fleets(rng: random.Random, host_count: int) -> None:
    knowledge = load_knowledge()
    never = knowledge.vocabulary.never_needed
    hosts = random_hosts(rng, knowledge, host_count)
    for vm in random_vms(rng, knowledge, hosts, 6):
        advice = advise(vm, hosts, knowledge)
        workload = frozenset(m.feature for m in advice.needs)
        # the figures `cpuguard metrics` gives agree with the advice
        assert hosts_after(vm, hosts, knowledge) in (advice.cold_after, None)
        if advice.advised is None:
            assert advice.cold_after == advice.live_after == ()
            continue
        domain = _pasted(vm, advised_cpu_xml(advice.advised), knowledge)
        cpu = domain.cpu
        model = knowledge.cpu_map.features_of(cpu.model or "")
        given_features = (model - cpu.disabled) | cpu.required
        # the advised <cpu> gives every need of the workload
        assert workload - never <= given_features, vm.name
        assert given_features == advice.advised.features
        # under check --cold, exactly the hosts of cold_after accept it
        req = build_requirements(vm.name, domain, vm.policy, Move.COLD, knowledge)
        accepting = tuple(name for name in sorted(hosts) if is_safe(decide(req, hosts[name])))
        assert accepting == advice.cold_after, vm.name
        for name in advice.cold_after:
            assert decide(req, hosts[name]).outcome is not Outcome.BLOCK
        # the most portable: every host that runs the workload, and live moves among them once booted
        assert advice.cold_after == advice.workload_hosts
        assert set(advice.live_after) == set(advice.cold_after)
        # never a feature no host has: each one is on every host it is advised for (or KVM provides it)
        assert advice.cold_after
        for name in advice.cold_after:
            assert given_features - never <= hosts[name].flags, (vm.name, name)


@SETTINGS
@given(st.randoms(use_true_random=False))
def test_definition_not_given_is_found(rng: random.Random) -> None:
    """A need of the workload outside a custom definition's features is reported, and only such a need."""
    knowledge = load_knowledge()
    hosts = random_hosts(rng, knowledge, 4)
    for vm in random_vms(rng, knowledge, hosts, 6):
        if vm.domain is None or vm.domain.cpu.mode != "custom" or vm.domain.arch != "x86_64":
            continue
        advice = advise(vm, hosts, knowledge)
        cpu = vm.domain.cpu
        given_features = (knowledge.cpu_map.features_of(cpu.model or "") - cpu.disabled) | cpu.required | cpu.optional
        expected = {m.feature for m in advice.needs} - given_features - knowledge.vocabulary.never_needed
        assert {m.feature for m in advice.not_given} == expected
        assert (advice.standing.value == "workload not given") == bool(expected)


@SETTINGS
@given(st.randoms(use_true_random=False))
def test_matrix_tells_configuration_from_workload_as_advise_does(rng: random.Random) -> None:
    from cpuguard.planning.matrix import compute_matrix

    knowledge = load_knowledge()
    hosts = random_hosts(rng, knowledge, 5)
    vms = random_vms(rng, knowledge, hosts, 8)
    matrix = compute_matrix(vms, hosts, knowledge)
    by_name = {vm.name: vm for vm in vms}
    for row in matrix.stranded:
        advice = advise(by_name[row.name], hosts, knowledge)
        if hosts_after(by_name[row.name], hosts, knowledge) is None:
            assert row.name not in matrix.stranded_by and advice.advised is None  # not an x86 guest: no advice
            continue
        opens = any(h != row.host for h in advice.cold_after)
        assert matrix.stranded_by[row.name] == ("configuration" if opens else "workload"), row.name
