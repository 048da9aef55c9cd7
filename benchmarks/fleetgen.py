"""Generate a synthetic fleet on disk, shaped like what ``cpuguard inventory collect`` writes.

Hosts: snapshot files whose feature sets are libvirt cpu_map models (real
guest CPU definitions of Intel and AMD server generations), some with a
feature or two more, as firmware and microcode updates leave them. VMs:
domain XML with the three CPU modes found in practice -- a custom named model
(the cluster baseline), host-passthrough and host-model -- and a policy for
one VM in five. Deterministic for a given seed.

    python benchmarks/fleetgen.py OUT_DIR [--vms 10000] [--hosts 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cpuguard.knowledge import load_knowledge  # noqa: E402
from cpuguard.planning.collect import inventory_text  # noqa: E402

#: Server generations a hosting fleet plausibly runs (libvirt cpu_map names).
HOST_MODELS = [
    "Westmere-IBRS", "SandyBridge-IBRS", "IvyBridge-IBRS", "Haswell-noTSX-IBRS", "Broadwell-noTSX-IBRS",
    "Skylake-Server-IBRS", "Skylake-Server-noTSX-IBRS", "Cascadelake-Server-noTSX", "Icelake-Server-noTSX",
    "Cooperlake", "SapphireRapids", "Opteron_G5", "EPYC-IBPB", "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa",
]  # fmt: skip
#: Guest models VMs are pinned to (older generations: what a cluster baseline looks like).
GUEST_MODELS = ["Westmere", "SandyBridge", "IvyBridge", "Haswell-noTSX", "Broadwell-noTSX", "Skylake-Server-noTSX-IBRS",
                "EPYC", "Opteron_G4", "qemu64"]  # fmt: skip
POLICY_FEATURES = ["avx2", "bmi2", "aes", "avx512f", "sha_ni", "pclmulqdq", "sse4_2", "avx", "fma"]

DOMAIN = """<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>2048</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
{cpu}
</domain>
"""


def generate(out: Path, vms: int, hosts: int, seed: int) -> None:
    rng = random.Random(seed)
    knowledge = load_knowledge()
    cpu_map = knowledge.cpu_map
    models = [m for m in HOST_MODELS if m in cpu_map.models]
    guests = [m for m in GUEST_MODELS if m in cpu_map.models]
    extras = sorted(knowledge.vocabulary.to_libvirt)
    (out / "hosts").mkdir(parents=True, exist_ok=True)
    (out / "domains").mkdir(exist_ok=True)
    (out / "vms").mkdir(exist_ok=True)
    # hardware generations: a model plus a firmware-dependent feature or two
    generations = []
    for model in models:
        for _variant in range(3):
            flags = set(cpu_map.features_of(model)) | set(rng.sample(extras, rng.randint(0, 2)))
            generations.append((model, cpu_map.get(model).vendor or "Intel", sorted(flags)))
    inventory_hosts: dict[str, dict[str, str]] = {}
    inventory_vms: dict[str, dict[str, str]] = {}
    host_names = []
    for i in range(hosts):
        model, vendor, flags = rng.choice(generations)
        name = f"node{i:04d}"
        host_names.append(name)
        snapshot = {
            "cpuguard_snapshot": 1, "host": name, "arch": "x86_64", "vendor": vendor,
            "model_name": f"libvirt model {model}", "libvirt_model": model, "flags": flags,
            "source": f"model:{model}", "kind": "model", "captured_at": "2026-11-01T00:00:00+00:00",
        }  # fmt: skip
        (out / "hosts" / f"{name}.json").write_text(json.dumps(snapshot), encoding="utf-8")
        inventory_hosts[name] = {"facts": f"hosts/{name}.json"}
    for i in range(vms):
        name = f"vm{i:05d}"
        roll = rng.random()
        if roll < 0.5:
            cpu = f"  <cpu mode='custom' match='exact'><model fallback='forbid'>{rng.choice(guests)}</model></cpu>"
        elif roll < 0.85:
            cpu = "  <cpu mode='host-passthrough' migratable='on'/>"
        else:
            cpu = "  <cpu mode='host-model'/>"
        (out / "domains" / f"{name}.xml").write_text(DOMAIN.format(name=name, cpu=cpu), encoding="utf-8")
        inventory_vms[name] = {"host": rng.choice(host_names), "domain": f"domains/{name}.xml"}
        if rng.random() < 0.2:
            features = ", ".join(rng.sample(POLICY_FEATURES, rng.randint(1, 3)))
            level = rng.choice(["x86-64-v2", "x86-64-v3"])
            policy = f"vm: {name}\nmode: enforce\nrequires:\n  level: {level}\n  features: [{features}]\n"
            (out / "vms" / f"{name}.yaml").write_text(policy, encoding="utf-8")
    # the format cpuguard inventory collect writes (JSON syntax, valid YAML)
    text = inventory_text("synthetic benchmark fleet", inventory_hosts, inventory_vms)
    (out / "inventory.yaml").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    generate(args.out, args.vms, args.hosts, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
