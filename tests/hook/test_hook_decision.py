"""The hook's decisions on the example fleet, through its real entry (cpuguard.hook.entry.main)."""

from __future__ import annotations

from hook_helpers import DOMAINS, HookSite, domain_xml, model_xml, passthrough_xml

from cpuguard.hook.decision import Event, error_result
from cpuguard.hook.events import guarded_operation
from cpuguard.records import Move


def test_only_begin_of_migrate_restore_and_prepare_is_guarded() -> None:
    assert guarded_operation("migrate", "begin") == "migrate"
    assert guarded_operation("restore", "begin") == "restore"
    assert guarded_operation("prepare", "begin") == "start"
    assert guarded_operation("start", "begin") is None
    assert guarded_operation("started", "begin") is None
    assert guarded_operation("migrate", "end") is None
    assert guarded_operation("release", "end") is None


def test_event_moves() -> None:
    assert Event("vm", "migrate", "migrate begin").move is Move.LIVE
    assert Event("vm", "restore", "restore begin").move is Move.LIVE
    assert Event("vm", "start", "prepare begin").move is Move.COLD


def test_incompatible_live_migration_is_blocked_with_every_origin(site: HookSite) -> None:
    run = site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    policy = site.policies / "vms" / "db01.yaml"
    assert run.exit_code == 1
    assert run.stderr == (
        "cpuguard: BLOCK db01 on old-node (live): missing abm, avx, avx2, bmi1, bmi2, f16c, fma, movbe, xsave "
        f"(level x86-64-v3 required by policy {policy}); abm, f16c (features required by the guest CPU "
        "definition (domain XML libvirt:db01)); avx, avx2, bmi1, bmi2, erms, fma, fsgsbase, invpcid, movbe, pcid, "
        "pclmulqdq, rdtscp, smep, spec_ctrl, xsave (guest CPU model "
        "Haswell-noTSX-IBRS (domain XML libvirt:db01))\n"
    )
    (record,) = site.records()
    assert record["verdict"] == "block"
    assert record["decision"] == "block"
    assert record["operation"] == "migrate"
    assert record["move"] == "live"
    assert record["host"] == "old-node"
    assert [m["feature"] for m in record["missing"]][:3] == ["abm", "avx", "avx2"]
    assert record["policy"]["path"] == str(policy)
    assert len(record["policy"]["sha256"]) == 16
    assert record["snapshot"]["path"] == str(site.snapshot)
    assert record["snapshot"]["stale"] is False
    assert record["message"] == run.stderr.rstrip("\n")


def test_compatible_migration_is_allowed_silently(site: HookSite) -> None:
    run = site.hook("web01", "migrate", model_xml("web01", "Westmere"))
    assert (run.exit_code, run.stderr) == (0, "")
    (record,) = site.records()
    assert (record["verdict"], record["decision"], record["missing"]) == ("allow", "allow", [])


def test_cold_start_ignores_what_a_passthrough_guest_saw_on_its_old_host(site: HookSite) -> None:
    """A Cascade Lake without TSX offers all that pbx01's policy and its scanned Asterisk need (AVX-512
    included), but not hle and rtm, which the running guest sees on new-node (Skylake-SP with TSX)."""
    site.snapshot_from("model:Cascadelake-Server-noTSX", "spare-node")
    live = site.hook("pbx01", "migrate", passthrough_xml("pbx01"))
    cold = site.hook("pbx01", "prepare", passthrough_xml("pbx01"))
    assert live.exit_code == 1
    assert live.stderr == (
        "cpuguard: BLOCK pbx01 on spare-node (live): missing hle, rtm "
        "(the running guest sees it now (host-passthrough on new-node))\n"
    )
    assert (cold.exit_code, cold.stderr) == (0, "")
    assert [(r["move"], r["verdict"], r["missing"]) for r in site.records()][1] == ("cold", "allow", [])


def test_a_passthrough_guests_workload_needs_still_apply_to_a_cold_start(site: HookSite) -> None:
    cold = site.hook("pbx01", "prepare", passthrough_xml("pbx01"))
    assert cold.exit_code == 1
    assert cold.stderr.startswith("cpuguard: BLOCK pbx01 on old-node (cold): missing avx (needed by /usr/sbin/asterisk")
    assert "avx512f (needed by /usr/sbin/asterisk" in cold.stderr
    assert "the running guest sees it now" not in cold.stderr


def test_passthrough_guest_the_inventory_does_not_place_gets_a_partial_live_check(site: HookSite) -> None:
    run = site.hook("stray", "migrate", passthrough_xml("stray"))
    assert run.exit_code == 0
    # an unchecked live rule warns (the core's verdict), and the hook still lets the move through
    assert run.stderr == (
        "cpuguard: WARN stray on old-node (live); live rule only partly applied: host-passthrough guest "
        "and its current host is unknown, so the features it sees now could not be checked; "
        "note: the inventory does not say where stray runs\n"
    )
    record = site.records()[0]
    assert (record["verdict"], record["decision"]) == ("warn", "allow")
    assert record["notes"][-1] == "the inventory does not say where stray runs"


def test_inventory_host_behind_a_uri_is_never_dialled(site: HookSite) -> None:
    inventory = site.policies / "inventory.yaml"
    inventory.write_text("hosts:\n  remote: {uri: 'qemu+tcp://192.0.2.1:1/system'}\nvms:\n  far01: {host: remote}\n")
    run = site.hook("far01", "migrate", passthrough_xml("far01"))
    assert run.exit_code == 0
    assert run.stderr.endswith(
        "note: far01 runs on remote (inventory), but its facts come from qemu+tcp://192.0.2.1:1/system, "
        "which the hook never contacts\n"
    )


def test_restore_uses_the_live_rule(site: HookSite) -> None:
    run = site.hook("pbx01", "restore", passthrough_xml("pbx01"))
    assert run.exit_code == 1
    assert "(live)" in run.stderr
    assert site.records()[0]["operation"] == "restore"


def test_policy_mode_warn_allows_and_says_why(site: HookSite) -> None:
    run = site.hook("web01", "prepare", model_xml("web01", "Haswell"))
    assert run.exit_code == 0
    assert run.stderr.startswith("cpuguard: WARN web01 on old-node (cold): missing avx, avx2")
    assert run.stderr.endswith("; policy mode is warn: the move is allowed, but the guest may fail\n")
    assert site.records()[0]["verdict"] == "warn"


def test_config_mode_warn_lets_a_blocked_move_through_and_logs_it(site: HookSite) -> None:
    site.configure(mode="warn")
    run = site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert run.exit_code == 0
    assert run.stderr.startswith("cpuguard: WARN db01 on old-node (live): missing abm, avx")
    assert run.stderr.endswith("; config mode is warn: allowed, but the guest may fail\n")
    (record,) = site.records()
    assert (record["verdict"], record["decision"], record["mode"]) == ("warn", "allow", "warn")
    assert "avx2" in [m["feature"] for m in record["missing"]]


def test_architecture_mismatch_is_a_problem_not_a_feature_list(site: HookSite) -> None:
    xml = b"<domain type='kvm'><name>arm01</name><os><type arch='aarch64'>hvm</type></os></domain>"
    run = site.hook("arm01", "prepare", xml)
    assert run.exit_code == 1
    assert "architecture mismatch: the guest is aarch64, the host x86_64" in run.stderr


def test_host_name_from_config_wins(site: HookSite) -> None:
    site.configure(host_name="rack7-node3")
    run = site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert run.stderr.startswith("cpuguard: BLOCK db01 on rack7-node3 (live)")
    assert site.records()[0]["host"] == "rack7-node3"


def test_error_result_defaults_block_live_moves_and_allow_starts() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    migrate = error_result(
        Event("vm1", "migrate", "migrate begin"), "boom", on_error=None, host="h", now=now, config_path=None
    )
    start = error_result(
        Event("vm1", "start", "prepare begin"), "boom", on_error=None, host="h", now=now, config_path=None
    )
    assert migrate.exit_code == 1
    assert migrate.message == (
        "cpuguard: ERROR vm1 on h (live): could not decide: boom; on_error for migrate is block: "
        "refusing the live migration here (the VM keeps running on its source host)"
    )
    assert start.exit_code == 0
    assert start.message == (
        "cpuguard: ERROR vm1 on h (cold): could not decide: boom; on_error for start is allow: "
        "allowing the start here unchecked"
    )
    assert (start.record["verdict"], start.record["decision"], start.record["error"]) == ("error", "allow", "boom")
    assert start.record["time"] == "2026-01-02T03:04:05.000+00:00"


def test_a_broken_host_file_fails_only_the_decisions_that_need_it(site: HookSite) -> None:
    """web01 runs on mid-node (inventory); mid-node's capabilities file is cut off."""
    hosts = site.policies / "hosts" / "mid-node.xml"
    hosts.write_text(hosts.read_text()[:200])
    warning = f"inventory host mid-node ignored (not needed here): {hosts}: taken for libvirt XML"

    # a VM on another host, and web01 where the live rule does not need mid-node's facts: decided, and warned
    db01 = site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert db01.exit_code == 1
    assert db01.stderr.startswith("cpuguard: BLOCK db01 on old-node (live): missing abm, avx")
    assert f"; {warning}" in db01.stderr
    pbx01 = site.hook("pbx01", "migrate", passthrough_xml("pbx01"))
    assert "(the running guest sees it now (host-passthrough on new-node))" in pbx01.stderr
    web01_model = site.hook("web01", "migrate", model_xml("web01", "Westmere"))
    assert web01_model.exit_code == 0
    assert web01_model.stderr.startswith(f"cpuguard: ALLOW web01 on old-node (live); {warning}")
    web01_cold = site.hook("web01", "prepare", passthrough_xml("web01"))
    assert web01_cold.exit_code == 0

    # a live move of a host-passthrough guest running on mid-node needs its facts: on_error
    web01_live = site.hook("web01", "migrate", passthrough_xml("web01"))
    assert web01_live.exit_code == 1
    assert web01_live.stderr.startswith(
        f"cpuguard: ERROR web01 on old-node (live): could not decide: web01 runs on mid-node (inventory), "
        f"whose facts cannot be used: {hosts}: taken for libvirt XML"
    )
    assert "malformed XML" in web01_live.stderr
    records = site.records()
    assert [r["verdict"] for r in records] == ["block", "block", "allow", "allow", "error"]
    assert all(any(w.startswith(warning) for w in r["warnings"]) for r in records[:4])


def test_hosts_no_vm_runs_on_are_not_read(site: HookSite) -> None:
    inventory = site.policies / "inventory.yaml"
    inventory.write_text(inventory.read_text().replace("hosts:\n", "hosts:\n  spare: {facts: hosts/absent.xml}\n", 1))
    run = site.hook("db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert run.exit_code == 1
    assert "spare" not in run.stderr
    assert site.records()[0]["warnings"] == []


NEWER_LIBVIRT_CPU = (
    "<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>GraniteRapids-v2</model>"
    "<vendor>Intel</vendor><feature policy='require' name='zero-fcs-fds'/>"
    "<feature policy='require' name='fdp-excptn-only'/><feature policy='disable' name='sbdr-ssdp-no'/></cpu>"
)


def test_domain_xml_of_a_newer_libvirt_is_decided_not_an_error(site: HookSite) -> None:
    """libvirt 12's model and feature names (bundled cpu_map): a decision, not on_error."""
    caps = site.root / "granite-capabilities.xml"  # as a libvirt 12 host would describe itself
    caps.write_text(
        "<capabilities><host><cpu><arch>x86_64</arch><model>GraniteRapids-v2</model><vendor>Intel</vendor>"
        "<feature name='zero-fcs-fds'/><feature name='fdp-excptn-only'/></cpu></host></capabilities>"
    )
    site.snapshot_from(str(caps), "granite-node")
    run = site.hook("db01", "migrate", domain_xml("db01", NEWER_LIBVIRT_CPU))
    assert (run.exit_code, run.stderr) == (0, "")
    older = NEWER_LIBVIRT_CPU.replace("GraniteRapids-v2", "Haswell-v2")
    assert site.hook("db01", "prepare", domain_xml("db01", older)).exit_code == 0
    site.snapshot_from("model:GraniteRapids-v2", "granite-model")
    lacking = site.hook("db01", "migrate", domain_xml("db01", NEWER_LIBVIRT_CPU))
    assert lacking.exit_code == 1
    assert lacking.stderr == (
        "cpuguard: BLOCK db01 on granite-model (live): missing fdp_excptn_only, zero_fcs_fds "
        "(features required by the guest CPU definition (domain XML libvirt:db01))\n"
    )
    assert [(r["operation"], r["verdict"]) for r in site.records()] == [
        ("migrate", "allow"),
        ("start", "allow"),
        ("migrate", "block"),
    ]


def test_a_name_no_cpu_map_knows_is_a_narrow_need_not_an_error(site: HookSite) -> None:
    cpu = (
        "<cpu mode='custom' match='exact'><model>FutureLake</model><feature policy='require' name='avx-quantum'/></cpu>"
    )
    run = site.hook("ci01", "prepare", domain_xml("ci01", cpu))
    assert run.exit_code == 1
    assert run.stderr == (
        "cpuguard: BLOCK ci01 on old-node (cold): missing avx-quantum (features required by the guest CPU "
        "definition (domain XML libvirt:ci01)); model:FutureLake (guest CPU model FutureLake (domain XML "
        "libvirt:ci01); the model is not in cpuguard's cpu_map, so only a host naming it can meet it)\n"
    )
    (record,) = site.records()
    assert (record["verdict"], record["decision"]) == ("block", "block")
