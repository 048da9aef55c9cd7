"""Session fixtures over tests/guest/images: roots and disks built once per session.

Roots shared through these fixtures are read-only by convention: a test that adds
to one starts from ``images.copy_root(root, tmp_path / "root")``. Everything lives
in one directory removed at the end of the session (loop devices are detached by
the builders themselves).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import in_ci
from tests.guest import images

PBX_DAEMON = "/usr/sbin/pbxd"
PBX_CLI = "/usr/local/bin/pbx-cli"


@pytest.fixture(scope="session")
def guest_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the session's roots and images live; removed when the session ends."""
    path = tmp_path_factory.mktemp("guest-images")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def scratch_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` emptied after the test: images and copied roots are too big to keep around."""
    yield tmp_path
    for child in tmp_path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def assembled_root(guest_image_dir: Path) -> images.Root:
    """A small Debian made of this machine's packages (bash, coreutils, libc...), about a second."""
    return images.assembled_debian_root(guest_image_dir / "assembled")


@pytest.fixture(scope="session")
def debootstrap_root(guest_image_dir: Path) -> images.Root:
    """A real Debian 12 minbase from the Debian archive: about 30 s, once per session.

    Without network access the test is skipped locally and fails under CI=true.
    """
    dest = guest_image_dir / "debootstrap"
    try:
        return images.debian_root(dest)
    except images.ImageBuildError as error:
        shutil.rmtree(dest, ignore_errors=True)
        message = f"debootstrap could not build a Debian root (network?): {error}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def pbx_root(guest_image_dir: Path, assembled_root: images.Root) -> images.Root:
    """The founding incident's guest: a -march=haswell PBX daemon with its own library
    (RUNPATH) and two plugins, run by an enabled unit, and a baseline x86-64 CLI whose
    library is found through /etc/ld.so.conf.d."""
    root = images.copy_root(assembled_root, guest_image_dir / "pbx-root")
    root = images.add_custom_program(root, PBX_DAEMON, march="haswell", library="runpath", plugins=2)
    return images.add_custom_program(root, PBX_CLI, march="x86-64", unit=False, library="ld.so.conf")


@pytest.fixture(scope="session")
def rocky_root(guest_image_dir: Path) -> images.Root:
    """A Rocky Linux 9.4-like root with a real rpmdb.sqlite."""
    return images.rocky9_root(guest_image_dir / "rocky")


@pytest.fixture(scope="session")
def pbx_disk(guest_image_dir: Path, pbx_root: images.Root) -> images.Disk:
    """``pbx_root`` as ext4 in partition 2 of a GPT raw image."""
    return images.ext4_disk(pbx_root, guest_image_dir / "pbx-gpt.img", table="gpt")


@pytest.fixture(scope="session", params=sorted(images.LAYOUTS))
def layout_disk(request: pytest.FixtureRequest, guest_image_dir: Path, pbx_root: images.Root) -> images.Disk:
    """``pbx_root`` in each layout of ``images.LAYOUTS`` (ext4/XFS/btrfs, MBR/GPT, LVM, qcow2, chain)."""
    directory = guest_image_dir / f"layout-{request.param}"
    directory.mkdir()
    return images.LAYOUTS[request.param](pbx_root, directory)


@pytest.fixture(scope="session", params=sorted(images.HOSTILE))
def hostile_disk(request: pytest.FixtureRequest, guest_image_dir: Path, pbx_root: images.Root) -> images.Disk:
    """Each entry of the bad-input catalog, built from ``pbx_root``."""
    directory = guest_image_dir / f"hostile-{request.param}"
    directory.mkdir()
    return images.HOSTILE[request.param](directory, pbx_root)
