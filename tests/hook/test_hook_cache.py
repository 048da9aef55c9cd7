"""The precompiled context: plain JSON, used while every input is unchanged, rebuilt otherwise, never stale."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hook_helpers import DOMAINS, HookSite, model_xml

from cpuguard.hook import cache
from cpuguard.hook.context import build_context, trust_chains
from cpuguard.hook.entry import Options, precompiled
from cpuguard.hook.plain import plain_context
from cpuguard.hook.shim import python_path

LATER = time.time() + 3600  # "now" for save(): every input looks old enough to trust


def builds(site: HookSite, now: datetime | None = None) -> list[Path]:
    """The plain context as the hook gets it (at ``now``, default an hour from now); returns [the config]
    when it was built, [] when loaded."""
    options = Options(config=str(site.config), cache_dir=str(site.cache_dir))
    at = now or datetime.now(UTC) + timedelta(hours=1)
    _, context = precompiled(options, lambda: at)
    return [site.config] if context is not None else []


def saves(site: HookSite, now: float) -> bool:
    context = build_context(site.config)
    return cache.save(str(site.cache_dir), str(site.config), plain_context(context), context.inputs, now)


def load(site: HookSite) -> dict[str, Any] | None:
    return cache.load(str(site.cache_dir), str(site.config), LATER)


def test_second_call_comes_from_the_cache(site: HookSite) -> None:
    assert builds(site) == [site.config]
    assert builds(site) == []
    (cached,) = site.cache_dir.iterdir()
    assert cached.stat().st_mode & 0o777 == 0o600
    assert site.cache_dir.stat().st_mode & 0o777 == 0o700


def test_every_kind_of_input_change_rebuilds(site: HookSite) -> None:
    changes: list[Callable[[], object]] = [
        lambda: site.configure(mode="warn"),
        lambda: (site.policies / "vms" / "db01.yaml").write_text("vm: db01\nrequires: {level: x86-64-v2}\n"),
        lambda: (site.policies / "vms" / "new01.yaml").write_text("vm: new01\n"),
        lambda: (site.policies / "vms" / "new01.yaml").unlink(),
        lambda: (site.policies / "inventory.yaml").write_text("hosts: {}\n"),
        lambda: site.snapshot_from("model:Nehalem", "old-node"),
        lambda: site.snapshot.unlink(),
    ]
    builds(site)
    for change in changes:
        change()
        assert builds(site) == [site.config]
        assert builds(site) == []


def test_a_policy_edit_shows_in_the_next_decision(site: HookSite) -> None:
    xml = (DOMAINS / "db01.xml").read_bytes()
    old = site.hook("db01", "prepare", xml).stderr
    policy = site.policies / "vms" / "db01.yaml"
    policy.write_text("vm: db01\nrequires: {features: [avx512f]}\n")
    new = site.hook("db01", "prepare", xml).stderr
    assert "x86-64-v3" in old and "avx512f" not in old
    assert "avx512f" in new and "x86-64-v3" not in new


def test_inputs_changed_in_the_last_seconds_are_not_cached(site: HookSite) -> None:
    assert not saves(site, time.time())
    assert not site.cache_dir.exists()
    assert saves(site, time.time() + cache.RACY_SECONDS + 1)


def test_cache_anyone_else_could_have_written_is_ignored(site: HookSite) -> None:
    builds(site)
    (cached,) = site.cache_dir.iterdir()
    os.chmod(cached, 0o622)
    assert load(site) is None
    os.chmod(cached, 0o600)
    assert load(site) is not None


def test_damaged_cache_is_rebuilt(site: HookSite) -> None:
    builds(site)
    (cached,) = site.cache_dir.iterdir()
    cached.write_bytes(cached.read_bytes()[:100])
    assert load(site) is None
    assert builds(site) == [site.config]


def test_each_config_directory_has_its_own_cache(site: HookSite, tmp_path: Path) -> None:
    other = HookSite(tmp_path / "other")
    other.root.mkdir()
    other.configure()
    other.cache_dir = site.cache_dir
    assert cache.cache_file(str(site.cache_dir), str(site.config)) != cache.cache_file(
        str(site.cache_dir), str(other.config)
    )
    builds(site)
    builds(other)
    assert builds(site) == []
    assert builds(other) == []


def test_unwritable_cache_directory_costs_speed_not_decisions(site: HookSite) -> None:
    site.cache_dir.write_text("not a directory")
    assert builds(site) == [site.config]
    assert builds(site) == [site.config]


def test_a_cached_decision_imports_no_core_parser_or_typing(site: HookSite) -> None:
    """With the context current, a decision loads none of cpuguard's core, no YAML or XML parser,
    no json, re, typing, dataclasses, pathlib or enum (docs/hook.md, "Speed")."""
    assert saves(site, LATER)
    heavy = (
        "{'yaml', 'click', 'libvirt', 'xml', 'defusedxml', 'json', 're', 'typing', 'dataclasses', 'pathlib', 'enum'}"
    )
    code = (
        "import sys\n"
        "sys.path.extend(sys.argv[1].split(':'))\n"  # as the shim runs it
        "before = set(sys.modules)\n"
        "from cpuguard.hook.entry import main\n"
        "code = main(sys.argv[2:])\n"
        "loaded = set(sys.modules) - before\n"
        "core = sorted(m for m in loaded if m.startswith('cpuguard.') and not m.startswith('cpuguard.hook'))\n"
        f"print(code, sorted({{m.split('.')[0] for m in loaded}} & {heavy}), core)\n"
    )
    args = [*site.options(), "--", "db01", "migrate", "begin", "-"]
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, ":".join(python_path()), *args],
        input=(DOMAINS / "db01.xml").read_bytes(),
        capture_output=True,
        timeout=60,
    )
    assert done.stdout.decode() == "1 [] []\n", done.stderr


def test_a_trusted_inputs_directories_are_watched_too(tmp_path: Path) -> None:
    """A chmod above an input changes no input's signature; with check_permissions the context is also
    keyed on every directory the trust check looked at (links resolved as well)."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "config.yaml").write_text("{}\n")
    (tmp_path / "etc").symlink_to(real)
    chains = trust_chains([str(tmp_path / "etc" / "config.yaml")])
    assert chains[: len(tmp_path.parts) + 1] == [str(tmp_path / "etc"), *map(str, [tmp_path, *tmp_path.parents])]
    assert str(real) in chains
    assert chains.count("/") == 1


def test_a_reboot_alone_keeps_the_cached_context(site: HookSite) -> None:
    """Nothing in the context depends on the boot: whether the snapshot predates it is judged per call
    (cpuguard.hook.hostfacts.local_host), so the cache key holds no file a boot replaces."""
    context = build_context(site.config)
    volatile = ("/proc/", "/sys/", "/run/", "/dev/")
    assert [i for i in context.inputs if i.startswith(volatile)] == []
    assert not any("btime" in repr(value) or "boot" in name for name, value in vars(context).items())
    assert "btime" not in repr(plain_context(context))


def test_the_cache_is_plain_json_and_names_its_inputs(site: HookSite) -> None:
    import json

    builds(site)
    (cached,) = site.cache_dir.iterdir()
    saved = json.loads(cached.read_text())
    assert saved["header"] == cache.header()
    paths = [path for path, _ in saved["inputs"]]
    assert str(site.config) in paths and str(site.snapshot) in paths
    assert set(cache.quick_path_files()) <= set(paths)
    assert cache.parse_json(cached.read_text()) == saved


def store_guest_scan(site: HookSite, scanned_at: datetime) -> None:
    """A stored guest scan of pbx01 (a real one, from tests/data), taken at ``scanned_at``."""
    import json

    data = Path(__file__).parents[1] / "data" / "cpuguard-guest-scan-assembled-debian12-pbxd.json"
    scan = {**json.loads(data.read_text()), "vm": "pbx01", "scanned_at": f"{scanned_at:%Y-%m-%dT%H:%M:%SZ}"}
    (site.policies / "guests").mkdir(exist_ok=True)
    (site.policies / "guests" / "pbx01.json").write_text(json.dumps(scan))


def test_a_guest_scan_turns_stale_on_the_quick_path_too(site: HookSite) -> None:
    """The context words a guest scan's age and staleness as of when it was built: the cache is not
    used once they would read otherwise, and the quick answer is the full path's, byte for byte."""
    site.snapshot_from("model:Skylake-Server-IBRS", "new-node")  # has all pbx01 needs: stale turns allow into warn
    scanned = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    store_guest_scan(site, scanned)
    xml = model_xml("pbx01", "Westmere")
    before = scanned + timedelta(days=7, seconds=-5)
    assert "6 days old" in site.hook("pbx01", "prepare", xml, now=before).stderr
    assert builds(site, before + timedelta(seconds=1)) == []  # cached, and current until the scan turns stale
    after = before + timedelta(seconds=6)
    quick = site.hook("pbx01", "prepare", xml, now=after)
    full = site.hook("pbx01", "prepare", xml, now=after, cache=False)
    assert "7 days old" in quick.stderr and "the guest scan of pbx01 is stale (7 days old)" in quick.stderr
    assert quick.stderr.startswith("cpuguard: WARN pbx01")
    assert quick == full
    *_, cached, uncached = site.records()
    assert {**cached, "elapsed_ms": 0} == {**uncached, "elapsed_ms": 0}


def test_the_cache_expires_when_a_scans_age_would_read_otherwise(site: HookSite) -> None:
    scanned = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    store_guest_scan(site, scanned)
    at = scanned + timedelta(hours=2, minutes=30)  # "2 hours old" until 3 hours
    assert builds(site, at) == [site.config]
    assert builds(site, scanned + timedelta(hours=2, minutes=58)) == []
    assert builds(site, scanned + timedelta(hours=3)) == [site.config]
    at = scanned + timedelta(days=3, hours=1)  # "3 days old" until 4 days
    assert builds(site, at) == [site.config]
    assert builds(site, scanned + timedelta(days=3, hours=23)) == []
    assert builds(site, scanned + timedelta(days=4)) == [site.config]


def test_an_input_edited_during_a_slow_build_is_not_cached(site: HookSite, monkeypatch: Any) -> None:
    """A policy edited after the build read it, but long enough before the save to look settled,
    must not be cached: its new signature would vouch for the content read before the edit."""
    from cpuguard.hook import context as context_module

    policy = site.policies / "vms" / "db01.yaml"
    offset = [cache.RACY_SECONDS]  # the clock: the inputs just written look settled when the build starts

    def clock() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=offset[0])

    real_build = context_module.build_context

    def slow_build(config: Path, now: datetime | None = None) -> Any:
        built = real_build(config, now)
        time.sleep(0.05)
        policy.write_text("vm: db01\nrequires: {features: [avx512f]}\n")  # edited after it was read
        offset[0] += 10  # and the build took another 10 s
        return built

    options = Options(config=str(site.config), cache_dir=str(site.cache_dir))
    monkeypatch.setattr(context_module, "build_context", slow_build)
    first, _ = precompiled(options, clock)
    monkeypatch.undo()
    assert "avx512f" not in [need[0] for need in first["vms"]["db01"]["needs"]]
    second, context = precompiled(options, clock)
    assert context is not None  # built again: the first build was not cached
    assert "avx512f" in [need[0] for need in second["vms"]["db01"]["needs"]]
    assert precompiled(options, clock)[1] is None  # and this one was


def test_a_cache_directory_others_could_write_to_is_not_used(site: HookSite, tmp_path: Path) -> None:
    """Where another user can rename files, a cache written for another configuration (or by root,
    for a context it trusted) could be swapped in: the directory must be this user's, a real directory
    that no one else can write. Otherwise the hook decides without the cache, never fails for it."""
    builds(site)
    assert load(site) is not None
    for mode in (0o770, 0o707, 0o1777):
        os.chmod(site.cache_dir, mode)
        assert load(site) is None
        assert not saves(site, LATER)
        assert builds(site) == [site.config]
        assert site.hook("db01", "prepare", (DOMAINS / "db01.xml").read_bytes()).exit_code == 1  # still decided
    os.chmod(site.cache_dir, 0o700)
    assert load(site) is not None
    elsewhere = tmp_path / "elsewhere"
    site.cache_dir.rename(elsewhere)
    site.cache_dir.symlink_to(elsewhere)  # a link, though to a good directory
    assert load(site) is None
    assert not saves(site, LATER)
    assert builds(site) == [site.config]


def test_a_cache_the_quick_path_cannot_read_is_rebuilt_not_an_error(site: HookSite) -> None:
    """Well-formed JSON, trusted, current, yet not what the quick path expects (damaged, or written
    by a bug): the decision is the full path's, and the cache is rebuilt."""
    import json

    xml = (DOMAINS / "db01.xml").read_bytes()
    later = datetime.now(UTC) + timedelta(hours=1)  # the inputs look settled: the rebuilt context is cached
    expected = site.hook("db01", "prepare", xml, cache=False, now=later)
    assert expected.exit_code == 1 and "BLOCK" in expected.stderr
    damages: list[Callable[[dict[str, Any]], object]] = [
        lambda context: context["vms"]["db01"].update(needs=[1]),  # TypeError
        lambda context: context.pop("inventory_warnings"),  # KeyError
        lambda context: context["host"].update(captured_us="soon"),  # TypeError, with the boot time
        lambda context: context["config"].pop("deadline"),  # KeyError, before deciding
        lambda context: context["config"].pop("audit_log"),  # KeyError, where to log it
    ]
    for damage in damages:
        builds(site)
        (cached,) = site.cache_dir.iterdir()
        saved = json.loads(cached.read_text())
        damage(saved["context"])
        cached.write_text(json.dumps(saved))
        assert load(site) is not None
        assert site.hook("db01", "prepare", xml, now=later) == expected
        assert "internal error" not in site.audit_log.read_text()
        assert load(site) == json.loads(json.dumps(plain_context(build_context(site.config))))
