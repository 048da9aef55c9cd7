"""cpuguard.hook.codetrust: the interpreter and python_path the hook runs as root, checked like its inputs."""

from __future__ import annotations

import os
import stat as st
import subprocess
import sys
from pathlib import Path

from hook_helpers import DOMAINS, HookSite, run_shim

from cpuguard.hook import shim
from cpuguard.hook.codetrust import code_problems, directory_problem
from cpuguard.hook.install import hook_path, install
from cpuguard.hook.status import status
from cpuguard.hosts.synthetic import model_host
from cpuguard.knowledge import load_knowledge

DIR, FILE = st.S_IFDIR, st.S_IFREG


class FakeFs:
    """Paths to (type|mode, owner); symbolic links as a mapping of path to target."""

    def __init__(self, entries: dict[str, tuple[int, int]], links: dict[str, str] | None = None) -> None:
        self.entries = {"/": (DIR | 0o755, 0), **entries}
        self.links = links or {}

    def resolve(self, path: str) -> str:
        return self.links.get(path, path)

    def stat(self, path: str) -> os.stat_result:
        target = self.resolve(path)
        if target not in self.entries:
            raise FileNotFoundError(2, "No such file or directory", path)
        mode, uid = self.entries[target]
        return os.stat_result((mode, 1, 1, 1, uid, 0, 100, 0, 0, 0))


def system() -> dict[str, tuple[int, int]]:
    return {
        "/usr": (DIR | 0o755, 0),
        "/usr/bin": (DIR | 0o755, 0),
        "/usr/bin/python3": (FILE | 0o755, 0),
        "/usr/lib": (DIR | 0o755, 0),
        "/usr/lib/python3": (DIR | 0o755, 0),
        "/usr/lib/python3/dist-packages": (DIR | 0o755, 0),
        "/usr/lib/python3/dist-packages/cpuguard": (DIR | 0o755, 0),
        "/usr/lib/python3/dist-packages/cpuguard/__init__.py": (FILE | 0o644, 0),
        "/home": (DIR | 0o755, 0),
        "/home/ci": (DIR | 0o755, 1000),
        "/home/ci/cpuguard": (DIR | 0o755, 1000),
        "/tmp": (DIR | 0o1777, 0),
        "/tmp/clone": (DIR | 0o755, 0),
    }


def problems(fs: FakeFs, python: str, path: list[str], modules: list[str] | None = None) -> list[str]:
    return code_problems(python, path, module_files=modules or [], stat=fs.stat, resolve=fs.resolve, owners={0})


def test_a_system_install_is_trusted() -> None:
    fs = FakeFs(system())
    modules = ["/usr/lib/python3/dist-packages/cpuguard/__init__.py"]
    assert problems(fs, "/usr/bin/python3", ["/usr/lib/python3/dist-packages"], modules) == []


def test_each_way_in_is_named() -> None:
    entries = system()
    entries["/usr/bin/python3"] = (FILE | 0o775, 0)
    entries["/usr/lib/python3/dist-packages/cpuguard/__init__.py"] = (FILE | 0o666, 0)
    fs = FakeFs(entries)
    found = problems(
        fs,
        "/usr/bin/python3",
        ["/tmp/clone", "/home/ci/cpuguard", "/usr/lib/python3/dist-packages", "/nowhere"],
        ["/usr/lib/python3/dist-packages/cpuguard/__init__.py"],
    )
    assert found == [
        "interpreter /usr/bin/python3: not trusted: it is writable by group (mode 0775); "
        "only files root alone can change are used",
        "python_path entry /tmp/clone: not trusted: its directory /tmp is writable by group and others (mode 1777)",
        "python_path entry /home/ci/cpuguard: not trusted: it is owned by uid 1000, not root",
        "python_path entry /usr/lib/python3/dist-packages: module /usr/lib/python3/dist-packages/cpuguard/__init__.py: "
        "not trusted: it is writable by group and others (mode 0666); only files root alone can change are used",
        "python_path entry /nowhere: not trusted: cannot check /nowhere: No such file or directory",
    ]


def test_a_symbolic_link_is_followed() -> None:
    entries = system()
    entries["/home/ci/venv"] = (DIR | 0o755, 0)
    fs = FakeFs(entries, links={"/opt/cpuguard": "/home/ci/venv"})
    fs.entries["/opt"] = (DIR | 0o755, 0)
    assert directory_problem("/opt/cpuguard", stat=fs.stat, resolve=fs.resolve) == (
        "its directory /home/ci is owned by uid 1000, not root"
    )
    assert directory_problem("/usr/bin/python3", stat=fs.stat, resolve=fs.resolve) == "it is not a directory"


def test_install_warns_loudly_about_a_python_path_below_tmp(site: HookSite, tmp_path: Path) -> None:
    """A python_path entry below /tmp (as a CI checkout may be): a warning naming it, not a refusal."""
    entry = tmp_path / "venv" / "site-packages"
    entry.mkdir(parents=True)
    hooks = tmp_path / "qemu.d"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CPUGUARD_", "PYTHON"))}
    env["PYTHONPATH"] = str(entry)
    args = ["--hooks-dir", str(hooks), "--config", str(site.config), "--cache-dir", str(site.cache_dir)]
    done = subprocess.run(
        [sys.executable, "-m", "cpuguard", "hook", "install", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"installed {hook_path(hooks)}\n")
    assert (
        f"cpuguard: WARNING: the hook would run code others can change: python_path entry {entry}: not trusted: "
        f"its directory /tmp is writable by group and others (mode 1777); anyone who can write there can run code "
        "as root at the next VM start (install cpuguard where only root can write)\n"
    ) in done.stderr
    assert str(entry) in shim.read_settings(hook_path(hooks).read_text())["python_path"].split(":")


def test_status_reports_an_untrusted_python_path_as_not_ok(site: HookSite, tmp_path: Path) -> None:
    hooks = tmp_path / "qemu.d"
    install(hooks, site.config, site.cache_dir, snapshot=lambda n: model_host("Westmere", load_knowledge(), "x"))
    target = hook_path(hooks)
    text = target.read_text()
    entries = shim.read_settings(text)["python_path"]
    target.write_text(text.replace(f"python_path={entries}\n", f"python_path={entries}:{tmp_path}\n"))
    check = {c.name: c for c in status(hooks)}["python_path"]
    assert not check.ok
    assert check.detail.endswith(
        f"{tmp_path}: not trusted: its directory /tmp is writable by group and others (mode 1777); "
        "the hook runs it as root: install cpuguard where only root can write"
    )
    # the hook itself still runs: this is a warning about who could change it
    assert run_shim(target, "db01", "migrate", (DOMAINS / "db01.xml").read_bytes()).exit_code == 1
