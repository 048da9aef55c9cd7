"""Cases where cpuguard once disagreed with libvirt on the same CPU definitions (issue 10):
a vendor it could not check, optional features, what KVM provides, names of a newer libvirt.
Each goes through the real CLI and asserts the text a user sees."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import run_cpuguard


def domain(name: str, cpu: str) -> str:
    return f"<domain type='kvm'><name>{name}</name><os><type arch='x86_64'>hvm</type></os>{cpu}</domain>"


def check(tmp_path: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return run_cpuguard("check", "vm", *args, cwd=tmp_path)


PINNED = domain(
    "pinned", "<cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model><vendor>Intel</vendor></cpu>"
)


def said(text: str) -> list[str]:
    """The lines of an answer with the 80-column wrapping undone: a warning or problem line's
    continuations (indented two more than it) joined back to it."""
    lines: list[str] = []
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if (
            lines
            and lines[-1].lstrip().startswith(("warning:", "vendor "))
            and indent == (len(lines[-1]) - len(lines[-1].lstrip()) + 2)
        ):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


def test_a_vendor_pinned_guest_is_blocked_on_a_host_of_unknown_vendor(tmp_path: Path) -> None:
    """libvirt: INCOMPATIBLE (cputest.c host-no-vendor/host). Allowed before: nothing else was missing."""
    result = check(tmp_path, {"pinned.xml": PINNED}, "pinned.xml", "host", "model:qemu64", "--cold")
    assert result.returncode == 1
    assert said(result.stdout)[:2] == [
        "BLOCK  pinned must not move to model:qemu64 (cold start)",
        "  vendor unknown: the guest CPU definition names Intel, the host's CPU vendor is not known",
    ]


def test_the_same_guest_without_a_vendor_is_allowed_there(tmp_path: Path) -> None:
    unpinned = PINNED.replace("<vendor>Intel</vendor>", "").replace("<name>pinned<", "<name>unpinned<")
    result = check(tmp_path, {"unpinned.xml": unpinned}, "unpinned.xml", "host", "model:qemu64", "--cold")
    assert (result.returncode, result.stdout.splitlines()[0]) == (
        0,
        "ALLOW  unpinned can move to model:qemu64 (cold start)",
    )


def test_a_running_guests_vendor_unknown_on_the_host_is_a_warning(tmp_path: Path) -> None:
    """A host-passthrough guest's vendor comes from its current host: could not be checked, so not an allow."""
    passthrough = domain("pt", "<cpu mode='host-passthrough'/>")
    intel_qemu64 = (
        "<capabilities><host><cpu><arch>x86_64</arch><model>qemu64</model><vendor>Intel</vendor>"
        "</cpu></host></capabilities>"
    )
    files = {"pt.xml": passthrough, "intel.xml": intel_qemu64}
    result = check(tmp_path, files, "pt.xml", "host", "model:qemu64", "--live", "--from-host", "intel.xml")
    assert result.returncode == 0
    assert said(result.stdout)[:2] == [
        "WARN   pt may move to model:qemu64 (live migration or memory-image restore), "
        "but not everything could be checked",
        "  warning: vendor not checked: the running guest sees a CPU by Intel, the host's CPU vendor is not known",
    ]


OPTIONAL = domain(
    "opt",
    "<cpu mode='custom' match='exact'><model fallback='forbid'>Haswell-noTSX</model>"
    "<feature policy='optional' name='avx2'/></cpu>",
)
NO_AVX2 = (
    "<capabilities><host><cpu><arch>x86_64</arch><model>Haswell-noTSX</model><vendor>Intel</vendor>"
    "<feature name='avx2' policy='disable'/></cpu></host></capabilities>"
)


def test_an_optional_feature_is_no_need_of_a_cold_start(tmp_path: Path) -> None:
    """libvirt gives the guest avx2 only if the host has it. Blocked before, for avx2."""
    result = check(tmp_path, {"opt.xml": OPTIONAL, "noavx2.xml": NO_AVX2}, "opt.xml", "host", "noavx2.xml", "--cold")
    assert (result.returncode, result.stdout.splitlines()[0]) == (0, "ALLOW  opt can move to noavx2 (cold start)")


def test_a_running_guest_has_an_optional_feature_only_if_its_host_had_it(tmp_path: Path) -> None:
    files = {"opt.xml": OPTIONAL, "noavx2.xml": NO_AVX2}
    had = check(tmp_path, files, "opt.xml", "host", "noavx2.xml", "--live", "--from-host", "model:Haswell-noTSX")
    assert had.returncode == 1
    assert had.stdout.splitlines()[:4] == [
        "BLOCK  opt must not move to noavx2 (live migration or memory-image restore)",
        "  noavx2 lacks 1 feature opt needs:",
        "    avx2",
        "        <- optional feature the running guest has (its host model:Haswell-noTSX has it; domain XML opt.xml)",
    ]
    lacked = check(tmp_path, files, "opt.xml", "host", "noavx2.xml", "--live", "--from-host", "noavx2.xml")
    assert (lacked.returncode, lacked.stdout.splitlines()[0]) == (
        0,
        "ALLOW  opt can move to noavx2 (live migration or memory-image restore)",
    )
    unknown = check(tmp_path, files, "opt.xml", "host", "noavx2.xml", "--live")
    assert unknown.returncode == 0
    assert said(unknown.stdout)[1] == (
        "  warning: live rule only partly applied: the guest CPU has optional features and its current host "
        "is unknown, so whether the running guest has them could not be checked"
    )


def test_kvm_provided_features_of_a_live_xml_are_no_needs_under_the_cold_rule(tmp_path: Path) -> None:
    """libvirt writes a running guest's CPU with check='full' listing what KVM added as require.
    model:Westmere lacks x2apic, tsc-deadline, arat and hypervisor; blocked before, under the cold rule."""
    live_xml = domain(
        "running",
        "<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>Westmere</model>"
        "<vendor>Intel</vendor><feature policy='require' name='hypervisor'/><feature policy='require' name='x2apic'/>"
        "<feature policy='require' name='tsc-deadline'/><feature policy='require' name='arat'/></cpu>",
    )
    for move in ("--cold", "--live"):
        result = check(tmp_path, {"running.xml": live_xml}, "running.xml", "host", "model:Westmere", move)
        assert result.returncode == 0, result.stdout
        assert result.stdout.startswith("ALLOW  running can move to model:Westmere")


NEWER = domain(
    "newer",
    "<cpu mode='custom' match='exact' check='partial'><model fallback='forbid'>Haswell-v2</model>"
    "<vendor>Intel</vendor><feature policy='require' name='fdp-excptn-only'/>"
    "<feature policy='require' name='zero-fcs-fds'/><feature policy='disable' name='sbdr-ssdp-no'/></cpu>",
)


def test_domain_xml_with_the_newest_libvirts_names_is_decided(tmp_path: Path) -> None:
    """libvirt 12's names: refused as unknown before (exit 2) wherever the installed cpu_map was older."""
    newer_host = (
        "<capabilities><host><cpu><arch>x86_64</arch><model>Haswell-noTSX</model><vendor>Intel</vendor>"
        "<feature name='fdp-excptn-only'/><feature name='zero-fcs-fds'/></cpu></host></capabilities>"
    )
    files = {"newer.xml": NEWER, "newer-host.xml": newer_host}
    allowed = check(tmp_path, files, "newer.xml", "host", "newer-host.xml", "--cold")
    assert (allowed.returncode, allowed.stdout.splitlines()[0]) == (
        0,
        "ALLOW  newer can move to newer-host (cold start)",
    )
    blocked = check(tmp_path, files, "newer.xml", "host", "model:Haswell-noTSX", "--cold")
    assert blocked.returncode == 1
    assert blocked.stdout.splitlines()[:4] == [
        "BLOCK  newer must not move to model:Haswell-noTSX (cold start)",
        "  model:Haswell-noTSX lacks 2 features newer needs:",
        "    fdp_excptn_only, zero_fcs_fds",
        "        <- features required by the guest CPU definition (domain XML newer.xml)",
    ]
    for model in ("EPYC-v5", "GraniteRapids", "SierraForest", "EPYC-Genoa", "EPYC-Turin"):
        xml = domain("m", f"<cpu mode='custom'><model>{model}</model></cpu>")
        result = check(tmp_path, {"m.xml": xml}, "m.xml", "host", f"model:{model}", "--cold")
        assert (result.returncode, result.stdout.splitlines()[0]) == (
            0,
            f"ALLOW  m can move to model:{model} (cold start)",
        )


def test_a_name_no_cpu_map_knows_is_a_narrow_need(tmp_path: Path) -> None:
    future = domain(
        "future",
        "<cpu mode='custom'><model>FutureLake</model><feature policy='require' name='avx-quantum'/></cpu>",
    )
    its_host = (
        "<capabilities><host><cpu><arch>x86_64</arch><model>FutureLake</model><vendor>Intel</vendor>"
        "<feature name='avx-quantum'/></cpu></host></capabilities>"
    )
    files = {"future.xml": future, "future-host.xml": its_host}
    blocked = check(tmp_path, files, "future.xml", "host", "model:SapphireRapids", "--cold")
    assert blocked.returncode == 1
    assert blocked.stdout.splitlines()[1:6] == [
        "  model:SapphireRapids lacks 2 features future needs:",
        "    avx-quantum",
        "        <- features required by the guest CPU definition (domain XML future.xml)",
        "    model:FutureLake",
        "        <- guest CPU model FutureLake (domain XML future.xml); the model is not in cpuguard's cpu_map, "
        "so only a host naming it can meet it",
    ]
    met = check(tmp_path, files, "future.xml", "host", "future-host.xml", "--cold")
    assert (met.returncode, met.stdout.splitlines()[0]) == (0, "ALLOW  future can move to future-host (cold start)")


def test_a_name_typed_in_a_policy_stays_an_error_with_suggestions(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    (policies / "vms").mkdir(parents=True)
    (policies / "inventory.yaml").write_text("hosts: {}\nvms: {}\n", encoding="utf-8")
    (policies / "vms" / "newer.yaml").write_text(
        "vm: newer\nrequires: {features: [zero-fcs-fd], model: GraniteRapid}\n", encoding="utf-8"
    )
    result = check(tmp_path, {"newer.xml": NEWER}, "--policies", str(policies), "newer.xml", "host", "model:Westmere")
    assert result.returncode == 2
    assert result.stderr.startswith(f"cpuguard: error: {policies / 'vms' / 'newer.yaml'}: unknown ")
    assert "did you mean" in result.stderr
