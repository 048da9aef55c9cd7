"""cpuguard.trust: files others could change are refused, naming the file and the way in.

Most cases run on a small fake file system passed in as ``stat``/``resolve``; a few run
on the real one (``/etc/passwd`` is root's on any Debian machine, ``/tmp`` is 1777).
"""

from __future__ import annotations

import os
import stat as st
import tempfile
from pathlib import Path

import pytest

from cpuguard.errors import BadInput
from cpuguard.trust import UntrustedFile, check_trusted


def _stat(mode: int, uid: int = 0) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, 0, 100, 0, 0, 0))


DIR, FILE = st.S_IFDIR, st.S_IFREG


class FakeFs:
    """Paths to (type|mode, owner); symbolic links as a mapping of path to target."""

    def __init__(self, entries: dict[str, tuple[int, int]], links: dict[str, str] | None = None) -> None:
        self.entries = {"/": (DIR | 0o755, 0), **entries}
        self.links = links or {}
        self.asked: list[str] = []

    def resolve(self, path: str) -> str:
        return self.links.get(path, path)

    def stat(self, path: str) -> os.stat_result:
        self.asked.append(path)
        target = self.resolve(path)
        if target not in self.entries:
            raise FileNotFoundError(2, "No such file or directory", path)
        mode, uid = self.entries[target]
        return _stat(mode, uid)


def _good() -> dict[str, tuple[int, int]]:
    return {
        "/etc": (DIR | 0o755, 0),
        "/etc/cpuguard": (DIR | 0o755, 0),
        "/etc/cpuguard/config.yaml": (FILE | 0o644, 0),
        "/etc/cpuguard/policies": (DIR | 0o700, 0),
        "/etc/cpuguard/policies/pbx01.yaml": (FILE | 0o600, 0),
    }


def _check(fs: FakeFs, path: str) -> None:
    check_trusted(path, stat=fs.stat, resolve=fs.resolve)


def test_a_root_only_tree_is_trusted() -> None:
    fs = FakeFs(_good())
    _check(fs, "/etc/cpuguard/policies/pbx01.yaml")
    assert {"/etc/cpuguard/policies/pbx01.yaml", "/etc/cpuguard/policies", "/etc/cpuguard", "/etc", "/"} <= set(
        fs.asked
    )


@pytest.mark.parametrize(
    ("change", "culprit", "problem"),
    [
        (("/etc/cpuguard/config.yaml", FILE | 0o664, 0), "/etc/cpuguard/config.yaml",
         "it is writable by group (mode 0664)"),
        (("/etc/cpuguard/config.yaml", FILE | 0o646, 0), "/etc/cpuguard/config.yaml",
         "it is writable by others (mode 0646)"),
        (("/etc/cpuguard/config.yaml", FILE | 0o644, 1000), "/etc/cpuguard/config.yaml",
         "it is owned by uid 1000, not root"),
        (("/etc/cpuguard", DIR | 0o775, 0), "/etc/cpuguard",
         "its directory /etc/cpuguard is writable by group (mode 0775)"),
        (("/etc/cpuguard", DIR | 0o755, 1000), "/etc/cpuguard",
         "its directory /etc/cpuguard is owned by uid 1000, not root"),
        (("/etc", DIR | 0o777, 0), "/etc", "its directory /etc is writable by group and others (mode 0777)"),
        (("/", DIR | 0o1777, 0), "/", "its directory / is writable by group and others (mode 1777)"),
    ],
)
def test_anything_others_can_change_is_refused(change: tuple[str, int, int], culprit: str, problem: str) -> None:
    entries = _good()
    path, mode, uid = change
    entries[path] = (mode, uid)
    with pytest.raises(UntrustedFile) as info:
        _check(FakeFs(entries), "/etc/cpuguard/config.yaml")
    assert str(info.value) == (
        f"/etc/cpuguard/config.yaml: not trusted: {problem}; only files root alone can change are used"
    )
    assert info.value.culprit == culprit
    assert info.value.exit_code == 2 and isinstance(info.value, BadInput)


def test_a_symlink_into_a_writable_directory_is_refused() -> None:
    entries = {**_good(), "/srv": (DIR | 0o755, 0), "/srv/drop": (DIR | 0o777, 0),
               "/srv/drop/config.yaml": (FILE | 0o644, 0)}  # fmt: skip
    del entries["/etc/cpuguard/config.yaml"]
    fs = FakeFs(entries, links={"/etc/cpuguard/config.yaml": "/srv/drop/config.yaml"})
    with pytest.raises(UntrustedFile, match=r"its directory /srv/drop is writable by group and others") as info:
        _check(fs, "/etc/cpuguard/config.yaml")
    assert info.value.culprit == "/srv/drop"


def test_a_symlink_to_a_file_of_another_user_is_refused() -> None:
    entries = {**_good(), "/home": (DIR | 0o755, 0), "/home/bob": (DIR | 0o755, 0),
               "/home/bob/config.yaml": (FILE | 0o644, 1000)}  # fmt: skip
    del entries["/etc/cpuguard/config.yaml"]
    fs = FakeFs(entries, links={"/etc/cpuguard/config.yaml": "/home/bob/config.yaml"})
    with pytest.raises(UntrustedFile, match=r"not trusted: it is owned by uid 1000, not root"):
        _check(fs, "/etc/cpuguard/config.yaml")


def test_a_trusted_symlink_target_is_trusted() -> None:
    entries = {**_good(), "/usr": (DIR | 0o755, 0), "/usr/share": (DIR | 0o755, 0),
               "/usr/share/cpuguard.yaml": (FILE | 0o644, 0)}  # fmt: skip
    del entries["/etc/cpuguard/config.yaml"]
    fs = FakeFs(entries, links={"/etc/cpuguard/config.yaml": "/usr/share/cpuguard.yaml"})
    _check(fs, "/etc/cpuguard/config.yaml")
    assert "/usr/share" in fs.asked


@pytest.mark.parametrize("kind", [DIR | 0o755, st.S_IFIFO | 0o644, st.S_IFCHR | 0o644])
def test_only_regular_files_are_trusted(kind: int) -> None:
    entries = _good()
    entries["/etc/cpuguard/config.yaml"] = (kind, 0)
    with pytest.raises(UntrustedFile, match=r"^/etc/cpuguard/config\.yaml: is not a regular file$"):
        _check(FakeFs(entries), "/etc/cpuguard/config.yaml")


def test_a_missing_file_is_bad_input_not_untrusted() -> None:
    with pytest.raises(BadInput, match=r"^/etc/cpuguard/none\.yaml: no such file$") as info:
        _check(FakeFs(_good()), "/etc/cpuguard/none.yaml")
    assert not isinstance(info.value, UntrustedFile)


def test_other_owners_can_be_allowed() -> None:
    entries = _good()
    entries["/etc/cpuguard/config.yaml"] = (FILE | 0o644, 64055)  # e.g. libvirt-qemu
    fs = FakeFs(entries)
    check_trusted("/etc/cpuguard/config.yaml", stat=fs.stat, resolve=fs.resolve, owners={0, 64055})
    with pytest.raises(UntrustedFile, match=r"owned by uid 64055, not root;"):
        _check(fs, "/etc/cpuguard/config.yaml")


# -- the real file system ---------------------------------------------------------------------


def test_a_root_file_of_the_system_is_trusted() -> None:
    passwd = Path("/etc/passwd")
    info = passwd.stat()
    if info.st_uid != 0 or info.st_mode & 0o022 or os.stat("/etc").st_mode & 0o022:
        pytest.skip("this machine's /etc/passwd is not root-only")
    check_trusted(passwd)


def test_a_file_under_tmp_is_refused_for_tmp_itself() -> None:
    with tempfile.NamedTemporaryFile(dir="/tmp") as handle:
        os.chmod(handle.name, 0o600)
        with pytest.raises(UntrustedFile) as info:
            check_trusted(handle.name, owners={0, os.geteuid()})
    assert info.value.culprit == "/tmp"
    assert "\n" not in str(info.value)


def test_a_group_writable_real_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("mode: enforce\n")
    path.chmod(0o664)
    with pytest.raises(UntrustedFile, match=r"it is writable by group \(mode 0664\)"):
        check_trusted(path, owners={0, os.geteuid()})
