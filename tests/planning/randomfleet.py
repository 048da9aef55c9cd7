"""Random fleets in memory, for checking the fast matrix against the core decision.

Hosts start from libvirt's named models with a few features dropped or added;
VMs use every CPU mode and feature policy, policies every mode. Some VMs run
on hosts that do not exist, some hosts are of another architecture or vendor:
the corners where a shortcut would disagree with ``verdict.decide``.
"""

from __future__ import annotations

import random

from cpuguard.knowledge import Knowledge
from cpuguard.levels import LEVEL_NAMES
from cpuguard.planning.records import VmSpec
from cpuguard.policy import VmPolicy
from cpuguard.records import Domain, GuestCpu, HostFacts


def random_hosts(rng: random.Random, knowledge: Knowledge, count: int) -> dict[str, HostFacts]:
    models = sorted(knowledge.cpu_map.models.values(), key=lambda m: m.name)
    pool = sorted(frozenset.union(*(m.features for m in models)))
    hosts: dict[str, HostFacts] = {}
    previous: HostFacts | None = None
    for i in range(count):
        name = f"h{i:03d}"
        if previous is not None and rng.random() < 0.3:  # identical hardware: one class, many hosts
            hosts[name] = HostFacts(**{**previous.__dict__, "name": name})
            continue
        model = rng.choice(models)
        flags = set(model.features)
        for feature in rng.sample(sorted(flags), k=min(len(flags), rng.randint(0, 3))):
            flags.discard(feature)
        flags.update(rng.sample(pool, k=rng.randint(0, 3)))
        arch = "aarch64" if rng.random() < 0.05 else "x86_64"
        vendor = rng.choice(["Intel", "AMD", "", model.vendor or ""])
        previous = hosts[name] = HostFacts(
            name, arch, vendor, model.name, frozenset(flags), f"model:{model.name}", "model"
        )
    return hosts


def random_vms(rng: random.Random, knowledge: Knowledge, hosts: dict[str, HostFacts], count: int) -> list[VmSpec]:
    models = sorted(knowledge.cpu_map.models)
    pool = sorted(knowledge.vocabulary.to_libvirt)
    vms = []
    for i in range(count):
        name = f"vm{i:04d}"
        domain = None
        if rng.random() < 0.9:
            mode = rng.choice(["custom", "custom", "host-passthrough", "host-model", "maximum"])
            model = rng.choice(models) if mode == "custom" else None
            model_features = sorted(knowledge.cpu_map.features_of(model)) if model else []
            cpu = GuestCpu(
                mode=mode,
                model=model,
                vendor=rng.choice([None, None, "Intel", "AMD"]) if model else None,
                required=frozenset(rng.sample(pool, k=rng.randint(0, 2))),
                optional=frozenset(rng.sample(pool, k=rng.randint(0, 1))),
                disabled=frozenset(rng.sample(model_features, k=min(len(model_features), rng.randint(0, 2)))),
                forbidden=frozenset(rng.sample(pool, k=rng.choice([0, 0, 1]))),
            )
            arch = "i686" if rng.random() < 0.03 else "x86_64"
            domain = Domain(name, arch, "kvm", cpu, f"domains/{name}.xml")
        policy = None
        if rng.random() < 0.6:
            model = rng.choice([None, None, *models[:5]])
            policy = VmPolicy(
                vm=name,
                source=f"vms/{name}.yaml",
                mode=rng.choice(["enforce", "enforce", "warn", "off"]),
                level=rng.choice([None, *LEVEL_NAMES]),
                features=frozenset(rng.sample(pool, k=rng.randint(0, 3))),
                model=model,
                model_features=knowledge.cpu_map.features_of(model) if model else frozenset(),
            )
        host = rng.choice([*sorted(hosts), None, "elsewhere"])
        vms.append(VmSpec(name, host, domain, policy))
    return vms
