"""Installing the shim next to other tools' hooks, running it as libvirt does, uninstalling, status."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hook_helpers import DOMAINS, ROOT, HookSite, run_shim

from cpuguard.errors import BadInput
from cpuguard.hook import shim
from cpuguard.hook.install import hook_path, install, reload_libvirt, uninstall
from cpuguard.hook.status import status
from cpuguard.hosts.synthetic import model_host
from cpuguard.knowledge import load_knowledge
from cpuguard.records import HostFacts

OTHER_HOOK = "#!/bin/sh\n# another tool's qemu hook\nexit 0\n"


def westmere(name: str | None) -> HostFacts:
    return model_host("Westmere", load_knowledge(), name or "old-node")


@pytest.fixture
def hooks(tmp_path: Path) -> Path:
    """/etc/libvirt/hooks with another tool's hooks already in place."""
    root = tmp_path / "libvirt-hooks"
    (root / "qemu.d").mkdir(parents=True)
    for path in (root / "qemu", root / "qemu.d" / "other-tool"):
        path.write_text(OTHER_HOOK)
        path.chmod(0o755)
    return root / "qemu.d"


def test_template_is_package_data_and_hooks_qemu_links_to_it() -> None:
    assert shim.template_path() == ROOT / "cpuguard" / "hook" / "qemu-shim.sh"
    link = ROOT / "hooks" / "qemu"
    assert link.is_symlink()
    assert os.readlink(link) == "../cpuguard/hook/qemu-shim.sh"  # relative: works in any clone
    assert link.resolve() == shim.template_path()
    text = shim.read_template()
    assert text.startswith("#!/bin/sh\n")
    assert len(text.splitlines()) < 50  # a shim, not a program
    subprocess.run(["sh", "-n", str(shim.template_path())], check=True)
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    relative = shim.template_path().relative_to(ROOT / "cpuguard").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in package_data["cpuguard"])


def test_install_checks_everything_before_writing_anything(hooks: Path, tmp_path: Path) -> None:
    config = tmp_path / "cpuguard" / "config.yaml"
    with pytest.raises(BadInput, match="cannot read the hook shim template: No such file or directory"):
        install(hooks, config, tmp_path / "cache", snapshot=westmere, template=tmp_path / "absent")
    broken = tmp_path / "broken-template"
    broken.write_text(shim.read_template().replace("config=@CONFIG@\n", ""))
    with pytest.raises(BadInput, match="not a cpuguard shim template: no config=@CONFIG@ line"):
        install(hooks, config, tmp_path / "cache", snapshot=westmere, template=broken)
    assert not config.parent.exists()
    assert not hook_path(hooks).exists()

    config.parent.mkdir()
    config.write_text("mode: sometimes\n")
    with pytest.raises(BadInput, match="mode: 'sometimes' is not one of enforce, warn"):
        install(hooks, config, tmp_path / "cache", snapshot=westmere)
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.yaml"]  # no snapshot taken
    assert not hook_path(hooks).exists()


def test_render_fills_every_setting_and_quotes_it() -> None:
    settings = {name: f"/a path/{name}" for name in shim.SETTINGS}
    text = shim.render(settings)
    assert "@" not in "".join(line for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert "config='/a path/config'" in text
    assert shim.read_settings(text) == settings


def test_install_leaves_other_hooks_alone_and_is_idempotent(hooks: Path, site: HookSite) -> None:
    first = install(hooks, site.config, site.cache_dir, snapshot=westmere)
    target = hook_path(hooks)
    assert first.done == [f"installed {target}"]
    assert first.needs_reload
    assert os.access(target, os.X_OK)
    assert (hooks / "other-tool").read_text() == OTHER_HOOK
    assert (hooks.parent / "qemu").read_text() == OTHER_HOOK
    settings = shim.read_settings(target.read_text())
    assert settings["config"] == str(site.config)
    assert (settings["on_error_migrate"], settings["on_error_restore"], settings["on_error_start"]) == ("1", "1", "0")

    again = install(hooks, site.config, site.cache_dir, snapshot=westmere)
    assert again.done == [f"{target} is up to date"]
    assert not again.needs_reload

    site.configure(on_error={"start": "block"})
    updated = install(hooks, site.config, site.cache_dir, snapshot=westmere)
    assert updated.done == [f"updated {target}"]
    assert shim.read_settings(target.read_text())["on_error_start"] == "1"


def test_install_never_overwrites_a_foreign_hook_of_the_same_name(hooks: Path, site: HookSite) -> None:
    hook_path(hooks).write_text(OTHER_HOOK)
    with pytest.raises(BadInput, match="exists and is not cpuguard's hook; not touching it"):
        install(hooks, site.config, site.cache_dir, snapshot=westmere)
    assert hook_path(hooks).read_text() == OTHER_HOOK
    with pytest.raises(BadInput, match="is not cpuguard's hook; not removing it"):
        uninstall(hooks)
    assert hook_path(hooks).read_text() == OTHER_HOOK


def test_install_writes_a_config_and_a_first_snapshot_when_absent(hooks: Path, tmp_path: Path) -> None:
    config = tmp_path / "cpuguard" / "config.yaml"
    report = install(hooks, config, tmp_path / "cache", snapshot=westmere)
    snapshot = config.parent / "host.json"
    assert report.done == [
        f"wrote {config} (defaults; see docs/config.md)",
        f"wrote host snapshot {snapshot} from model:Westmere "
        "(refresh it when hardware, microcode or kernel options change: docs/hook.md)",
        f"no policies directory {config.parent / 'policies'} yet: put VM policies in "
        f"{config.parent / 'policies' / 'vms'}/ and the inventory in inventory.yaml there "
        "(README, 'Policies and the inventory')",
        f"installed {hook_path(hooks)}",
    ]
    with config.open("a") as handle:
        handle.write("check_permissions: false  # below /tmp, which anyone may write\n")
    check = {c.name: c for c in status(hooks)}["config"]
    assert not check.ok
    assert check.detail == (
        f"{config}: mode enforce; its policies directory {config.parent / 'policies'} is missing: no VM policies "
        "and no inventory, so the hook checks only what each guest's CPU definition needs "
        "(create it, with vms/<vm>.yaml and inventory.yaml, or set policies:)"
    )
    assert json.loads(snapshot.read_text())["host"] == "old-node"
    assert "on_error:\n  migrate: block\n  restore: block\n  start: allow\n" in config.read_text()
    # the written config is valid, and a second install keeps it
    config.write_text(config.read_text().replace("mode: enforce", "mode: warn"))
    install(hooks, config, tmp_path / "cache", snapshot=westmere)
    assert "mode: warn" in config.read_text()


def test_installed_shim_decides_like_libvirt_runs_it(hooks: Path, site: HookSite) -> None:
    install(hooks, site.config, site.cache_dir, snapshot=westmere)
    target = hook_path(hooks)
    blocked = run_shim(target, "db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert blocked.exit_code == 1
    assert blocked.stdout == ""
    assert blocked.stderr.startswith("cpuguard: BLOCK db01 on old-node (live): missing abm, avx")
    assert len(blocked.stderr.splitlines()) == 1
    allowed = run_shim(target, "web01", "prepare", (DOMAINS / "web01.xml").read_bytes())
    assert (allowed.exit_code, allowed.stdout) == (0, "")
    assert run_shim(target, "web01", "started", b"").exit_code == 0
    assert [r["vm"] for r in site.records()] == ["db01", "web01"]


def test_shim_without_its_interpreter_follows_on_error(hooks: Path, site: HookSite, tmp_path: Path) -> None:
    install(hooks, site.config, site.cache_dir, snapshot=westmere)
    target = hook_path(hooks)
    text = target.read_text()
    missing = tmp_path / "gone" / "python3"
    target.write_text(text.replace(f"python={shim.read_settings(text)['python']}\n", f"python={missing}\n"))
    message = (
        f"cpuguard: hook cannot run: {missing} is missing (reinstall cpuguard, then run 'cpuguard hook install')\n"
    )
    migrate = run_shim(target, "db01", "migrate", b"<domain/>")
    assert (migrate.exit_code, migrate.stderr) == (1, message)
    start = run_shim(target, "db01", "prepare", b"<domain/>")
    assert (start.exit_code, start.stderr) == (0, message)
    assert run_shim(target, "db01", "release", b"").exit_code == 0


def test_shim_without_cpuguard_on_its_path_follows_on_error(hooks: Path, site: HookSite) -> None:
    install(hooks, site.config, site.cache_dir, snapshot=westmere)
    target = hook_path(hooks)
    text = target.read_text()
    path_line = f"python_path={shim.read_settings(text)['python_path']}"
    target.write_text(text.replace(path_line, "python_path=/nonexistent") if path_line in text else text)
    run = run_shim(target, "db01", "migrate", b"<domain/>")
    assert run.exit_code == 1
    assert run.stderr == "cpuguard: hook cannot run: No module named 'cpuguard'\n"


def test_uninstall_removes_only_cpuguard(hooks: Path, site: HookSite) -> None:
    install(hooks, site.config, site.cache_dir, snapshot=westmere)
    report = uninstall(hooks)
    assert report.done == [f"removed {hook_path(hooks)} (configuration, host snapshot and audit log are kept)"]
    assert sorted(p.name for p in hooks.iterdir()) == ["other-tool"]
    assert site.config.exists() and site.snapshot.exists()
    assert uninstall(hooks).done == [f"{hook_path(hooks)} is not installed"]


def test_status_from_not_installed_to_live(hooks: Path, site: HookSite) -> None:
    (check,) = status(hooks)
    assert (check.name, check.ok) == ("hook", False)
    assert check.detail.endswith("not installed (No such file or directory); run 'cpuguard hook install'")

    install(hooks, site.config, site.cache_dir, snapshot=westmere)
    checks = {c.name: c for c in status(hooks)}
    assert list(checks) == ["hook", "interpreter", "python_path", "config", "snapshot", "live"]
    # interpreter and python_path depend on where this checkout lives (tests/hook/test_hook_codetrust.py)
    assert [checks[name].ok for name in ("hook", "config", "snapshot", "live")] == [True, True, True, False]
    assert checks["config"].detail == f"{site.config}: mode enforce, 4 VM policies in {site.policies}"
    assert "libvirt finds new hooks only when it starts or reloads" in checks["live"].detail

    # a decision by a hook run from a shell does not prove that libvirt runs it ...
    run_shim(hook_path(hooks), "web01", "prepare", (DOMAINS / "web01.xml").read_bytes())
    assert not {c.name: c for c in status(hooks)}["live"].ok
    # ... one whose parent was libvirt's daemon does
    record = {**site.records()[-1], "caller": "virtqemud"}
    with site.audit_log.open("a") as log:
        log.write(json.dumps(record) + "\n")
    live = {c.name: c for c in status(hooks)}["live"]
    assert live.ok
    assert live.detail.endswith(f"web01 start -> warn ({site.audit_log})")


def test_status_reports_a_broken_config(hooks: Path, site: HookSite) -> None:
    install(hooks, site.config, site.cache_dir, snapshot=westmere)
    site.config.write_text("mode: sometimes\n")
    checks = {c.name: c for c in status(hooks)}
    assert not checks["config"].ok
    assert checks["config"].detail == (
        f"{site.config}: mode: 'sometimes' is not one of enforce, warn: the hook follows on_error until this is fixed"
    )


def test_reload_sends_sighup_to_the_daemon_in_the_pidfile(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = tmp_path / "virtqemud.pid"
        pidfile.write_text(f"{sleeper.pid}\n")
        assert reload_libvirt([tmp_path / "absent.pid", pidfile]) == (
            f"reloaded libvirt (SIGHUP to pid {sleeper.pid} from {pidfile})"
        )
        assert sleeper.wait(timeout=10) == -1  # SIGHUP's default action ends sleep
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    with pytest.raises(BadInput, match="no running libvirt daemon found"):
        reload_libvirt([tmp_path / "absent.pid"])


def test_shipped_shim_is_executable() -> None:
    assert os.access(ROOT / "hooks" / "qemu", os.X_OK)
    assert shutil.which("sh")


def test_status_notices_a_shim_older_than_the_config(hooks: Path, site: HookSite) -> None:
    install(hooks, site.config, site.cache_dir, snapshot=westmere)
    site.configure(on_error={"start": "block"})
    checks = {c.name: c for c in status(hooks)}
    assert not checks["shim"].ok
    assert checks["shim"].detail == (
        f"the shim's on_error_start differ from {site.config}: run 'cpuguard hook install' again"
    )
    install(hooks, site.config, site.cache_dir, snapshot=westmere)
    assert "shim" not in {c.name for c in status(hooks)}


def test_status_names_a_broken_inventory_host(hooks: Path, site: HookSite) -> None:
    install(hooks, site.config, site.cache_dir, snapshot=westmere)
    hosts = site.policies / "hosts" / "mid-node.xml"
    hosts.write_text("<capabilities>")
    check = {c.name: c for c in status(hooks)}["inventory"]
    assert not check.ok
    assert check.detail.startswith(f"host facts that cannot be used: mid-node: {hosts}: taken for libvirt XML")
    assert "malformed XML" in check.detail


def test_hook_install_works_from_a_wheel(hooks: Path, site: HookSite, tmp_path: Path) -> None:
    """What ``pip install .`` (not editable) puts on a machine: only the package, no source tree."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "cpuguard", source / "cpuguard", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0:
        # building needs setuptools >= 77 from pip's cache or the package index
        reason = f"cannot build a wheel: {built.stderr.strip().splitlines()[-1:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    (wheel,) = wheels.glob("cpuguard-*.whl")
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert (target / "cpuguard" / "hook" / "qemu-shim.sh").is_file()
    dependencies = [p for p in sys.path if p.endswith("site-packages")]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join([str(target), *dependencies])}
    args = ["--hooks-dir", str(hooks), "--config", str(site.config), "--cache-dir", str(site.cache_dir)]
    done = subprocess.run(
        [sys.executable, "-m", "cpuguard", "hook", "install", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"installed {hook_path(hooks)}\n")
    settings = shim.read_settings(hook_path(hooks).read_text())
    assert settings["python_path"].split(":")[0] == str(target)
    run = run_shim(hook_path(hooks), "db01", "migrate", (DOMAINS / "db01.xml").read_bytes())
    assert run.stderr.startswith("cpuguard: BLOCK db01 on old-node (live)")


def test_the_shim_carries_the_deadline_for_before_the_config_is_read(hooks: Path, site: HookSite) -> None:
    site.configure(deadline_seconds=2.5)
    install(hooks, site.config, site.cache_dir, snapshot=westmere)
    text = hook_path(hooks).read_text()
    assert shim.read_settings(text)["deadline"] == "2.5"
    assert '--deadline "$deadline" -- "$@"' in text
    site.configure(deadline_seconds=4)
    checks = {c.name: c for c in status(hooks)}
    assert checks["shim"].detail == (
        f"the shim's deadline differ from {site.config}: run 'cpuguard hook install' again"
    )
