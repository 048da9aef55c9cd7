"""dpkg's file lists and diversions: this machine's real database, then hostile input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cpuguard.guest import dpkg
from cpuguard.guest.dpkg import canonical, diverted_paths, local_diversions, normalise, owned_paths
from cpuguard.guest.errors import GuestDataError
from tests.conftest import in_ci

DPKG_INFO = Path("/var/lib/dpkg/info")
MERGED_USR = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}


def real_lists() -> list[tuple[str, bytes]]:
    lists = sorted(DPKG_INFO.glob("*.list"))
    if not lists:
        message = "no dpkg database on this machine (the suite runs on Debian)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return [(path.name, path.read_bytes()) for path in lists]


def test_real_database_owns_the_shell_and_the_c_library() -> None:
    owned = owned_paths(real_lists())
    assert "/" in owned  # the "/." every list starts with
    assert "/usr/share/doc/dpkg/copyright" in owned or "/usr/share/doc/dpkg" in owned
    # Debian 12's bash.list still says /bin/bash; on merged /usr the file is /usr/bin/bash
    assert "/bin/bash" in owned or "/usr/bin/bash" in owned
    canon = {canonical(path, MERGED_USR) for path in owned}
    assert "/usr/bin/bash" in canon
    assert not any(path.endswith("/") and path != "/" for path in owned)
    assert not any("/./" in path or path.endswith("/.") for path in owned)


def test_every_real_program_on_path_is_owned_or_known_local() -> None:
    """Each file in /usr/bin of this Debian machine is in some package's list once the
    merged-/usr aliases are resolved: the lists and canonical() agree with the disk."""
    owned = {canonical(path, MERGED_USR) for path in owned_paths(real_lists())}
    diversions = Path("/var/lib/dpkg/diversions")
    if diversions.exists():
        owned |= {canonical(path, MERGED_USR) for path in diverted_paths(diversions.read_bytes())}
    usr_bin = [entry.path for entry in os.scandir("/usr/bin") if entry.is_file(follow_symlinks=False)]
    unowned = sorted(path for path in usr_bin if path not in owned)
    # alternatives and files made by maintainer scripts are not in any list; real
    # package files are: a handful of stragglers at most, never most of them
    assert len(unowned) < max(10, len(usr_bin) // 20), unowned[:20]


def test_real_diversions_count_both_names() -> None:
    path = Path("/var/lib/dpkg/diversions")
    if not path.exists() or not path.read_bytes().strip():
        pytest.skip("this machine has no dpkg diversions")
    data = path.read_bytes()
    lines = data.decode().splitlines()
    diverted = diverted_paths(data)
    for original, moved_to, package in zip(lines[0::3], lines[1::3], lines[2::3], strict=True):
        assert moved_to in diverted
        assert (original in diverted) == (package != ":")


def test_diversions_local_and_package() -> None:
    data = b"/usr/bin/sh\n/usr/bin/sh.distrib\ndash\n/usr/sbin/asterisk\n/usr/sbin/asterisk.distrib\n:\n"
    assert diverted_paths(data) == {"/usr/bin/sh", "/usr/bin/sh.distrib", "/usr/sbin/asterisk.distrib"}
    assert local_diversions(data) == {"/usr/sbin/asterisk"}
    assert diverted_paths(b"") == frozenset()


def test_diversions_not_in_threes_are_refused() -> None:
    with pytest.raises(GuestDataError, match="not groups of three"):
        diverted_paths(b"/a\n/b\n")


def test_list_lines_are_normalised_and_junk_ignored() -> None:
    data = b"/.\n/usr/\n/usr//bin/./x\nrelative/name\n\n/with\x00nul\n/a/../b\n/crlf\r\n/\xff\xfe\n" + b"/" * 5000
    assert owned_paths([("x.list", data)]) == {"/", "/usr", "/usr/bin/x", "/crlf", "/\udcff\udcfe"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("/.", "/"), ("/", "/"), ("//usr///lib/", "/usr/lib"), ("usr", None), ("/a/..", None), ("", None)],
)
def test_normalise(raw: str, expected: str | None) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    ("path", "links", "expected"),
    [
        ("/bin/bash", MERGED_USR, "/usr/bin/bash"),
        ("/bin", MERGED_USR, "/usr/bin"),
        ("/binary/x", MERGED_USR, "/binary/x"),
        ("/lib64/ld-linux-x86-64.so.2", MERGED_USR, "/usr/lib64/ld-linux-x86-64.so.2"),
        ("/lib/x86_64-linux-gnu/libc.so.6", {"/lib": "/usr/lib"}, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
        ("/usr/bin/bash", MERGED_USR, "/usr/bin/bash"),
        # a link climbing above the guest's root stays inside it
        ("/bin/x", {"/bin": "../../../usr/bin"}, "/usr/bin/x"),
        # the longest alias wins
        ("/opt/app/lib/x", {"/opt": "/srv/opt", "/opt/app": "/data/app"}, "/data/app/lib/x"),
        ("/bin/x", {"/bin": "."}, "/x"),
        ("relative", MERGED_USR, "relative"),
        ("/bin/x", {"/bin": "usr/\x00bin"}, "/bin/x"),
    ],
)
def test_canonical(path: str, links: dict[str, str], expected: str) -> None:
    assert canonical(path, links) == expected


def test_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpkg, "MAX_LIST_FILES", 2)
    with pytest.raises(GuestDataError, match="more than 2 package file lists"):
        owned_paths([("a.list", b"/a\n")] * 3)
    monkeypatch.setattr(dpkg, "MAX_PATHS", 3)
    with pytest.raises(GuestDataError, match="more than 3 owned paths"):
        owned_paths([("a.list", b"/a\n/b\n/c\n/d\n")])
    monkeypatch.setattr(dpkg, "MAX_LIST_BYTES", 10)
    with pytest.raises(GuestDataError, match=r"exceed .* \(b\.list\)"):
        owned_paths([("a.list", b"/a\n"), ("b.list", b"/0123456789\n")])
    monkeypatch.setattr(dpkg, "MAX_DIVERSIONS_BYTES", 4)
    with pytest.raises(GuestDataError, match="larger than"):
        diverted_paths(b"/a\n/b\nc\n")


def test_error_names_a_hostile_file_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpkg, "MAX_LIST_BYTES", 0)
    with pytest.raises(GuestDataError) as caught:
        owned_paths([("evil\n\x1b[2J.list", b"/a\n")])
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)
