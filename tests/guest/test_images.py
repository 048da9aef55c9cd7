"""The image builders yield what their records claim, checked with the tools that own each
format (qemu-img, sfdisk, blkid, debugfs, xfs_db, btrfs, LVM, cryptsetup, ntfs-3g,
objdump, qemu-user), never with libguestfs: the inspection tests use that."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.conftest import need_tool
from tests.guest import images
from tests.guest.conftest import PBX_CLI, PBX_DAEMON
from tests.guest.rpmtools import rpm_file_list

MiB = images.MiB


def tool(name: str, *args: str | Path, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_tool(name), *map(str, args)],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        check=check,
        timeout=timeout,
    )


def blkid(image: Path, offset: int) -> dict[str, str]:
    """What blkid's low-level probe finds at ``offset``; {} for nothing."""
    out = tool("blkid", "-p", "-o", "export", "-O", str(offset), image, check=False)
    assert out.returncode in (0, 2), out.stderr  # 2: nothing found
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def partitions(image: Path) -> dict[str, Any]:
    table: dict[str, Any] = json.loads(tool("sfdisk", "-J", image).stdout)["partitiontable"]
    return table


def raw_view(disk: images.Disk, directory: Path) -> Path:
    """The guest's view of the disk as a raw file (a qcow2, chain included, converted)."""
    if disk.format == "raw":
        return disk.path
    raw = directory / f"{disk.path.stem}.view.raw"
    tool("qemu-img", "convert", "-U", "-O", "raw", disk.path, raw)
    return raw


def debugfs(image: Path, offset: int, request: str) -> str:
    return tool("debugfs", "-R", request, f"{image}?offset={offset}").stdout


def ymm_instructions(path: Path) -> int:
    return tool("objdump", "-d", "--no-show-raw-insn", path).stdout.count("%ymm")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- roots


def test_assembled_root_is_this_machines_debian_with_its_dpkg_database(assembled_root: images.Root) -> None:
    root = assembled_root.path
    assert assembled_root.os_id == images.read_os_release(Path("/"))["ID"] == "debian"
    assert assembled_root.version_id == images.read_os_release(Path("/"))["VERSION_ID"]
    assert assembled_root.package_format == "deb"
    assert set(images.ASSEMBLED_SEEDS) <= set(assembled_root.packages)
    assert {"libc6", "libselinux1", "libtinfo6"} <= set(assembled_root.packages)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        assert os.readlink(root / link) == target
    status = (root / "var/lib/dpkg/status").read_text()
    assert sorted(re.findall(r"^Package: (\S+)$", status, re.M)) == sorted(assembled_root.packages)
    lists = sorted((root / "var/lib/dpkg/info").glob("*.list"))
    assert len(lists) == len(assembled_root.packages)
    for listed in lists:  # verbatim copies of this machine's lists
        assert listed.read_bytes() == Path("/var/lib/dpkg/info", listed.name).read_bytes()
    assert (root / "etc/fstab").read_text() == images.FSTAB
    assert "include /etc/ld.so.conf.d/*.conf" in (root / "etc/ld.so.conf").read_text()
    assert (root / "etc/ld.so.conf.d/x86_64-linux-gnu.conf").is_file()
    assert os.readlink(root / "usr/bin/awk") == "/etc/alternatives/awk"  # unowned, as on a real Debian


def test_assembled_root_runs_its_programs_with_its_own_loader_and_libraries(assembled_root: images.Root) -> None:
    """Nothing of this machine is needed: the root's ld.so and libraries run its bash and ls."""
    loader = assembled_root.guest("/lib64/ld-linux-x86-64.so.2")
    libs = f"{assembled_root.guest('/lib/x86_64-linux-gnu')}"
    bash = assembled_root.guest("/bin/bash")
    out = subprocess.run(
        [loader, "--inhibit-cache", "--library-path", libs, bash, "-c", "echo $BASH_VERSION"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip()
    ls = assembled_root.guest("/usr/bin/ls")
    subprocess.run([loader, "--inhibit-cache", "--library-path", libs, ls, "/"], capture_output=True, check=True)


def test_custom_programs_use_avx2_where_built_for_haswell(pbx_root: images.Root) -> None:
    daemon, cli = pbx_root.programs
    assert (daemon.guest_path, daemon.march, cli.guest_path, cli.march) == (PBX_DAEMON, "haswell", PBX_CLI, "x86-64")
    assert daemon.needs_avx2 and not cli.needs_avx2
    assert len(daemon.elf_files) == 4  # program, its library, two plugins
    for guest_path in daemon.elf_files:
        assert ymm_instructions(pbx_root.guest(guest_path)) > 0, guest_path
    for guest_path in cli.elf_files:
        assert ymm_instructions(pbx_root.guest(guest_path)) == 0, guest_path


def test_custom_programs_link_their_library_by_runpath_or_ld_so_conf(pbx_root: images.Root) -> None:
    daemon, cli = pbx_root.programs
    dynamic = tool("readelf", "-d", pbx_root.guest(daemon.guest_path)).stdout
    assert "Shared library: [libpbxd.so.1]" in dynamic
    assert "Library runpath: [/usr/local/lib]" in dynamic
    assert daemon.library == "/usr/local/lib/libpbxd.so.1" and daemon.library_via == "runpath"
    assert daemon.plugins == ("/usr/lib/pbxd/modules/mod_0.so", "/usr/lib/pbxd/modules/mod_1.so")
    dynamic = tool("readelf", "-d", pbx_root.guest(cli.guest_path)).stdout
    assert "Shared library: [libpbx-cli.so.1]" in dynamic and "runpath" not in dynamic.lower()
    assert pbx_root.guest("/etc/ld.so.conf.d/pbx-cli.conf").read_text() == "/opt/pbx-cli/lib\n"
    assert pbx_root.guest(cli.library or "").is_file()


def test_custom_programs_are_in_no_package(pbx_root: images.Root) -> None:
    listed = set()
    for path in pbx_root.guest("/var/lib/dpkg/info").glob("*.list"):
        listed |= set(path.read_text(errors="surrogateescape").splitlines())
    for program in pbx_root.programs:
        for guest_path in program.elf_files:
            assert guest_path not in listed and guest_path.replace("/usr", "", 1) not in listed


def test_daemon_is_run_by_an_enabled_unit_as_systemctl_writes_it(pbx_root: images.Root) -> None:
    daemon, cli = pbx_root.programs
    assert daemon.unit == "/etc/systemd/system/pbxd.service"
    assert "\nExecStart=/usr/sbin/pbxd -f\n" in pbx_root.guest(daemon.unit).read_text()
    assert daemon.wants == "/etc/systemd/system/multi-user.target.wants/pbxd.service"
    assert os.readlink(pbx_root.path / daemon.wants.lstrip("/")) == "/etc/systemd/system/pbxd.service"
    assert cli.unit is None and cli.wants is None


def test_unit_variants_relative_link_disabled_and_exec_prefix(scratch_dir: Path, assembled_root: images.Root) -> None:
    root = images.copy_root(assembled_root, scratch_dir / "root")
    root = images.add_custom_program(root, "/opt/a/bin/a", unit="alpha.service", link="relative", exec_prefix="-")
    root = images.add_custom_program(root, "/srv/b", enabled=False)
    a, b = root.programs
    assert os.readlink(root.path / (a.wants or "").lstrip("/")) == "../alpha.service"
    assert "\nExecStart=-/opt/a/bin/a -f\n" in root.guest(a.unit or "").read_text()
    assert b.unit == "/etc/systemd/system/b.service" and b.wants is None
    assert not (root.path / "etc/systemd/system/multi-user.target.wants/b.service").exists()
    assert not (assembled_root.path / "opt/a").exists()  # the shared root is untouched


def test_haswell_daemon_dies_on_westmere_and_runs_on_haswell(pbx_root: images.Root) -> None:
    """Ground truth that the main code path needs AVX2: qemu-user as each CPU, with the
    guest's own loader and libraries (``-L`` makes the root qemu's file-system prefix)."""
    qemu = need_tool("qemu-x86_64")
    daemon = str(pbx_root.guest(PBX_DAEMON))

    def on(cpu: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([qemu, "-cpu", cpu, "-L", str(pbx_root.path), daemon], capture_output=True, timeout=60)

    assert on("Haswell").returncode == 0
    assert on("Westmere").returncode in (-4, 132)  # SIGILL
    # /opt/pbx-cli/lib is found through ld.so.conf.d only with an ld.so.cache, which the root lacks
    environment = ["-E", "LD_LIBRARY_PATH=/opt/pbx-cli/lib"]
    cli_path = str(pbx_root.guest(PBX_CLI))
    cli = subprocess.run(
        [qemu, "-cpu", "Westmere", "-L", str(pbx_root.path), *environment, cli_path], capture_output=True, timeout=60
    )
    assert cli.returncode == 0, cli.stderr


def test_rocky9_root_looks_like_a_minimal_rocky_9_4(rocky_root: images.Root) -> None:
    root = rocky_root.path
    assert (rocky_root.os_id, rocky_root.version_id) == ("rocky", "9.4")
    assert rocky_root.pretty_name == "Rocky Linux 9.4 (Blue Onyx)"
    assert images.read_os_release(root)["ID_LIKE"] == "rhel centos fedora"
    assert os.readlink(root / "etc/os-release") == "../usr/lib/os-release"
    assert (root / "usr/lib/os-release").read_text() == images.ROCKY94_OS_RELEASE
    for name in ("redhat-release", "system-release"):
        assert os.readlink(root / "etc" / name) == "rocky-release"
    assert (root / "etc/rocky-release").read_text() == "Rocky Linux release 9.4 (Blue Onyx)\n"
    assert os.readlink(root / "lib64") == "usr/lib64"
    assert (root / "etc/fstab").read_text() == images.FSTAB


def test_rocky9_root_files_are_owned_in_a_real_rpmdb(rocky_root: images.Root) -> None:
    assert (rocky_root.path / "var/lib/rpm/rpmdb.sqlite").is_file()
    owned = rpm_file_list(rocky_root.path)
    assert {"/usr/bin/bash", "/usr/bin/ls", "/usr/lib64/libc.so.6", "/usr/lib/os-release", "/etc/fstab"} <= owned
    queried = tool("rpm", "--root", rocky_root.path, "--dbpath", "/var/lib/rpm", "-qa", "--qf", "%{NAME}\n")
    assert sorted(queried.stdout.split()) == sorted(rocky_root.packages)
    loader = rocky_root.guest("/lib64/ld-linux-x86-64.so.2")
    bash = rocky_root.guest("/usr/bin/bash")
    lib64 = rocky_root.guest("/usr/lib64")
    out = subprocess.run(
        [loader, "--inhibit-cache", "--library-path", lib64, bash, "-c", "echo ok"], capture_output=True
    )
    assert out.stdout == b"ok\n"


def test_debootstrap_root_is_a_real_debian_minbase(scratch_dir: Path, debootstrap_root: images.Root) -> None:
    assert (debootstrap_root.os_id, debootstrap_root.version_id) == ("debian", "12")
    assert {"apt", "bash", "dpkg", "libc6", "coreutils"} <= set(debootstrap_root.packages)
    assert len(debootstrap_root.packages) > 60
    assert not list((debootstrap_root.path / "var/cache/apt/archives").glob("*.deb"))
    listed = tool("dpkg-query", f"--admindir={debootstrap_root.path}/var/lib/dpkg", "-W", "-f", "${Package}\n")
    assert sorted(listed.stdout.split()) == sorted(debootstrap_root.packages)
    root = images.add_custom_program(images.copy_root(debootstrap_root, scratch_dir / "root"))
    disk = images.ext4_disk(root, scratch_dir / "minbase.img", table="mbr")
    assert disk.size <= 300 * MiB
    assert "pbxd" in debugfs(disk.path, disk.offset, "ls -l /usr/sbin")
    assert "pbxd" not in debugfs(disk.path, disk.offset, "ls -l /usr/local/sbin")


# ---------------------------------------------------------------- disks


def assert_root_inside(raw: Path, disk: images.Disk, scratch: Path) -> None:
    """The filesystem at disk.offset holds the root's custom programs, byte for byte where the
    tools can read bytes (ext4, btrfs), by listing and size otherwise (XFS)."""
    assert disk.root is not None
    program = disk.root.guest(PBX_DAEMON)
    if disk.filesystem == "ext4":
        dumped = scratch / "dumped"
        debugfs(raw, disk.offset, f"dump {PBX_DAEMON} {dumped}")
        assert sha(dumped) == sha(program)
        assert "libpbxd.so.1" in debugfs(raw, disk.offset, "ls /usr/local/lib")
        return
    length = disk.lvm.lv_size if disk.lvm else (raw.stat().st_size - disk.offset if disk.table is None else 0)
    if disk.table is not None:
        (part,) = [p for p in partitions(raw)["partitions"] if p["start"] * 512 == disk.offset]
        length = part["size"] * 512
    region = images.extract_region(raw, disk.offset, length, scratch / "fs.img")
    if disk.filesystem == "xfs":
        listing = tool("xfs_db", "-r", "-c", "ls /usr/sbin", region).stdout
        assert re.search(r"\bregular\b.*\bpbxd \(good\)", listing), listing
        size = tool("xfs_db", "-r", "-c", f"path {PBX_DAEMON}", "-c", "print core.size", region).stdout
        assert size.strip() == f"core.size = {program.stat().st_size}"
        mode = tool("xfs_db", "-r", "-c", "path /tmp", "-c", "print core.mode", region).stdout
        assert mode.strip() == "core.mode = 041777"  # the sticky bit a prototype cannot express
    elif disk.filesystem == "btrfs":
        shown = tool("btrfs", "filesystem", "show", region).stdout
        assert f"Label: '{images.ROOT_LABEL}'" in shown
        out = scratch / "restored"
        out.mkdir()
        tool("btrfs", "restore", "-i", "--path-regex", r"^/(|usr(|/sbin(|/pbxd)))$", region, out)
        assert sha(out / "usr/sbin/pbxd") == sha(program)
    else:
        pytest.fail(f"no check for {disk.filesystem}")


def assert_real_volume_group(layout_disk: images.Disk, lvm: images.Lvm) -> None:
    """pvs/lvs on a read-only loop device over the PV agree with the record; nothing is left behind."""
    before = sorted(os.listdir("/run/lvm")) if os.path.isdir("/run/lvm") else []
    loop = images.loop_device(layout_disk.path, lvm.pv_offset, lvm.pv_size, read_only=True)
    with loop as device, images.private_lvm(device) as run_lvm:
        (pv,) = images.lvm_report(run_lvm, "pvs", "pv_name,vg_name,pe_start")
        lvs = {row["lv_name"]: row for row in images.lvm_report(run_lvm, "lvs", "lv_name,seg_pe_ranges,lv_size")}
    assert (pv["pv_name"], pv["vg_name"], int(pv["pe_start"])) == (device, lvm.vg, lvm.pe_start)
    assert set(lvs) == {lvm.lv, *lvm.other_lvs}
    last_extent = lvm.first_extent + lvm.lv_size // lvm.extent_size - 1
    assert lvs[lvm.lv]["seg_pe_ranges"] == f"{device}:{lvm.first_extent}-{last_extent}"
    assert layout_disk.offset == lvm.pv_offset + lvm.pe_start + lvm.first_extent * lvm.extent_size
    first_swap = int(lvs["swap"]["seg_pe_ranges"].rsplit(":", 1)[1].split("-")[0])
    assert blkid(layout_disk.path, lvm.pv_offset + lvm.pe_start + first_swap * lvm.extent_size)["TYPE"] == "swap"
    # nothing left behind on this machine: no loop device, no LVM state or metadata backups
    assert str(layout_disk.path) not in tool("losetup", "-a").stdout
    assert (sorted(os.listdir("/run/lvm")) if os.path.isdir("/run/lvm") else []) == before
    for kept in ("/etc/lvm/backup", "/etc/lvm/archive"):
        assert not any(lvm.vg in name for name in (os.listdir(kept) if os.path.isdir(kept) else []))


def assert_chain(layout_disk: images.Disk) -> None:
    """The top overlay names its base by absolute path and format, and reads the same."""
    chain = images.qemu_info(layout_disk.path, chain=True)
    assert isinstance(chain, list)
    assert [Path(str(layer["filename"])) for layer in chain] == [layout_disk.path, *layout_disk.chain]
    top = chain[0]
    assert top["backing-filename"] == str(layout_disk.chain[0]) and layout_disk.chain[0].is_absolute()
    assert top["backing-filename-format"] == layout_disk.backing_format == "qcow2"
    assert tool("qemu-img", "compare", "-U", layout_disk.path, layout_disk.chain[0]).returncode == 0
    assert layout_disk.path.stat().st_size < MiB  # a pristine overlay


def test_layout_holds_the_root_where_the_record_says(layout_disk: images.Disk, scratch_dir: Path) -> None:
    disk = layout_disk
    info = images.qemu_info(disk.path)
    assert isinstance(info, dict)
    assert (info["format"], info["virtual-size"]) == (disk.format, disk.size)
    assert disk.size <= 300 * MiB
    raw = raw_view(disk, scratch_dir)
    if disk.table is None:
        assert disk.offset == 0 and disk.partition is None
    else:
        table = partitions(raw)
        assert table["label"] == {"mbr": "dos", "gpt": "gpt"}[disk.table]
        if disk.lvm is None:
            part = table["partitions"][(disk.partition or 0) - 1]
            assert part["start"] * 512 == disk.offset
    found = blkid(raw, disk.offset)
    assert (found.get("TYPE"), found.get("LABEL")) == (disk.filesystem, images.ROOT_LABEL)
    assert_root_inside(raw, disk, scratch_dir)
    if disk.lvm is not None:
        assert_real_volume_group(disk, disk.lvm)
    if disk.chain:
        assert_chain(disk)


def test_a_filesystem_that_outgrows_its_partition_is_refused(scratch_dir: Path, assembled_root: images.Root) -> None:
    """mkfs.btrfs grows a file too small for the tree: never silently, never over a neighbour."""
    with pytest.raises(images.ImageBuildError, match="does not fit"):
        images.btrfs_disk(assembled_root, scratch_dir / "small.img", table="gpt", size=64 * MiB)


def test_layouts_cover_every_filesystem_table_and_format() -> None:
    assert set(images.LAYOUTS) == {
        "ext4", "ext4-mbr", "ext4-gpt", "xfs", "xfs-gpt", "btrfs", "btrfs-mbr", "lvm-gpt", "lvm-mbr", "qcow2",
        "qcow2-chain",
    }  # fmt: skip


def test_xfs_protofile_keeps_colons_and_refuses_what_it_cannot_express(scratch_dir: Path) -> None:
    tree = scratch_dir / "tree"
    (tree / "var/lib/dpkg/info").mkdir(parents=True)
    (tree / "var/lib/dpkg/info/libc6:amd64.list").write_text("/.\n")
    (tree / "tmp").mkdir()
    (tree / "tmp").chmod(0o1777)
    (tree / "link").symlink_to("var/lib")
    text, sticky = images.xfs_protofile(tree)
    assert "libc6:amd64.list ---644 0 0 " in text and "link l--777 0 0 var/lib" in text
    assert sticky == ["/tmp"]
    (tree / "a name").write_text("")
    with pytest.raises(ValueError, match="cannot hold the name 'a name'"):
        images.xfs_protofile(tree)


def test_copy_region_keeps_images_sparse(scratch_dir: Path) -> None:
    source = scratch_dir / "source"
    with open(source, "wb") as handle:
        handle.truncate(256 * MiB)
        handle.seek(100 * MiB)
        handle.write(b"x" * 4096)
    copy = images.extract_region(source, 64 * MiB, 128 * MiB, scratch_dir / "copy")
    assert copy.stat().st_size == 128 * MiB and copy.stat().st_blocks * 512 <= MiB
    with open(copy, "rb") as handle:
        handle.seek(36 * MiB)
        assert handle.read(4097) == b"x" * 4096 + b"\0"


# ---------------------------------------------------------------- hostile input


def test_hostile_catalog_entries_each_say_in_one_line_what_they_test() -> None:
    assert len(images.HOSTILE) == 13
    for name, build in images.HOSTILE.items():
        doc = (build.__doc__ or "").strip()
        assert doc and "\n" not in doc, name


def test_luks_disk_is_a_luks2_header_without_device_mapper(scratch_dir: Path) -> None:
    disk = images.luks_disk(scratch_dir / "luks.img")
    assert blkid(disk.path, disk.offset)["TYPE"] == "crypto_LUKS" == disk.filesystem
    header = images.extract_region(disk.path, disk.offset, 16 * MiB, scratch_dir / "header")
    dump = tool("cryptsetup", "luksDump", header).stdout
    assert "Version:       \t2" in dump and "Keyslots:" in dump


def test_unknown_filesystem_is_random_bytes_in_a_linux_partition(scratch_dir: Path) -> None:
    disk = images.unknown_fs_disk(scratch_dir / "unknown.img")
    assert partitions(disk.path)["partitions"][0]["type"] == "83"
    assert blkid(disk.path, disk.offset) == {} and disk.filesystem is None


def test_truncated_qcow2_keeps_its_header_and_loses_clusters(scratch_dir: Path, pbx_disk: images.Disk) -> None:
    disk = images.truncated_qcow2(pbx_disk, scratch_dir / "cut.qcow2")
    whole = images.qcow2_of(pbx_disk, scratch_dir / "whole.qcow2")
    assert disk.path.stat().st_size <= whole.path.stat().st_size // 2
    info = images.qemu_info(disk.path)
    assert isinstance(info, dict) and info["format"] == "qcow2"
    assert tool("qemu-img", "check", "-U", disk.path, check=False).returncode != 0


@pytest.mark.parametrize(
    ("field", "message"), [("cluster_bits", "Unsupported cluster size"), ("l1_table_offset", "L1 table offset invalid")]
)
def test_corrupt_qcow2_header_is_refused_by_qemu(
    scratch_dir: Path, pbx_disk: images.Disk, field: Literal["cluster_bits", "l1_table_offset"], message: str
) -> None:
    disk = images.corrupt_qcow2(pbx_disk, scratch_dir / "bad.qcow2", field=field)
    assert disk.path.read_bytes()[:4] == b"QFI\xfb"
    out = tool("qemu-img", "info", "-U", disk.path, check=False)
    assert out.returncode != 0 and message in out.stderr


def test_backing_loop_is_detected_by_qemu_img_info(scratch_dir: Path) -> None:
    # Only ``info --backing-chain`` is safe here: qemu-img 7.2's ``check`` on this chain
    # never returns (it spins, allocating), so an inspector must find the loop itself.
    disk = images.backing_loop(scratch_dir)
    a, b = disk.path, disk.chain[0]
    for image, backing in ((a, b), (b, a)):
        info = images.qemu_info(image)
        assert isinstance(info, dict) and info["backing-filename"] == str(backing)
    out = tool("qemu-img", "info", "-U", "--backing-chain", a, check=False, timeout=30)
    assert out.returncode != 0 and "infinite loop" in out.stderr


def test_host_backing_file_is_only_named_in_the_header(scratch_dir: Path) -> None:
    disk = images.host_backing_qcow2(scratch_dir / "shadow.qcow2")
    info = images.qemu_info(disk.path)
    assert isinstance(info, dict)
    assert (info["backing-filename"], info["backing-filename-format"]) == ("/etc/shadow", "raw")
    assert b"/etc/shadow" in disk.path.read_bytes()[:4096]


def test_backing_without_format_has_no_format_extension(scratch_dir: Path, pbx_disk: images.Disk) -> None:
    base = images.qcow2_of(pbx_disk, scratch_dir / "base.qcow2")
    disk = images.no_backing_format_qcow2(base, scratch_dir / "top.qcow2")
    info = images.qemu_info(disk.path)
    assert isinstance(info, dict)
    assert info["backing-filename"] == str(base.path.absolute()) and "backing-filename-format" not in info
    assert disk.backing_format is None and disk.chain == (base.path.absolute(),)


def test_hostile_links_point_out_of_the_guest_and_in_circles(scratch_dir: Path, assembled_root: images.Root) -> None:
    root = images.add_hostile_links(images.copy_root(assembled_root, scratch_dir / "root"))
    links = [p for p in root.planted if p.kind != "unit"]
    for planted in links:
        assert os.readlink(root.path / planted.guest_path.lstrip("/")) == planted.target
    assert {p.guest_path for p in root.planted if p.kind == "unit"} == {
        "/etc/systemd/system/evil.service",
        "/etc/systemd/system/loop.service",
    }
    # resolved as the guest sees them: inside the root, loops refused
    assert root.guest("/usr/local/bin/evil") == root.path / "etc/shadow"
    assert root.guest("/usr/local/lib/x") == root.path / "etc/passwd"
    assert root.guest("/opt/hostroot/etc/shadow") == root.path / "etc/shadow"
    with pytest.raises(images.ImageBuildError, match="too many levels"):
        root.guest("/usr/local/bin/loop-a")
    disk = images.ext4_disk(root, scratch_dir / "links.img")
    assert 'Fast link dest: "/etc/shadow"' in debugfs(disk.path, 0, "stat /usr/local/bin/evil")


def test_control_character_names_reach_the_filesystem_as_bytes(scratch_dir: Path, assembled_root: images.Root) -> None:
    root = images.add_control_char_names(images.copy_root(assembled_root, scratch_dir / "root"))
    assert [p.guest_path for p in root.planted] == list(images.CONTROL_NAMES)
    disk = images.ext4_disk(root, scratch_dir / "names.img", table="mbr")
    listing = debugfs(disk.path, disk.offset, "ls -l /usr/local/bin")
    for shown in ("esc\\x1b[31mred", "new\\x0aline", "latin1-\\xe9"):
        assert shown in listing
    for name in images.CONTROL_NAMES:
        assert ymm_instructions(root.path / name.lstrip("/")) > 0
    with pytest.raises(ValueError, match="cannot hold"):
        images.xfs_protofile(root.path)


def test_huge_sparse_disk_is_2_tib_on_a_few_megabytes(scratch_dir: Path, assembled_root: images.Root) -> None:
    disk = images.huge_sparse_disk(assembled_root, scratch_dir / "huge.img")
    assert disk.path.stat().st_size == disk.size == 2 * images.TiB
    assert disk.path.stat().st_blocks * 512 < 128 * MiB
    last = partitions(disk.path)["partitions"][-1]
    assert (last["start"] + last["size"]) * 512 > disk.size - 2 * MiB
    assert blkid(disk.path, disk.offset)["TYPE"] == "ext4"


def test_no_os_disk_holds_only_data(scratch_dir: Path) -> None:
    disk = images.no_os_disk(scratch_dir / "data.img")
    assert blkid(disk.path, disk.offset)["LABEL"] == "data"
    top = debugfs(disk.path, disk.offset, "ls /").split()
    assert "data" in top and "etc" not in top and "usr" not in top
    files = debugfs(disk.path, disk.offset, "ls /data/files")
    assert all(path.rsplit("/", 1)[1] in files for path in images.NO_OS_FILES)


def test_windows_disk_is_ntfs_with_a_system_root(scratch_dir: Path) -> None:
    disk = images.windows_disk(scratch_dir / "windows.img")
    found = blkid(disk.path, disk.offset)
    assert (found["TYPE"], found["LABEL"]) == ("ntfs", "Windows")
    volume = images.extract_region(disk.path, disk.offset, 64 * MiB, scratch_dir / "ntfs.img")
    listing = tool("ntfsls", "-f", "-p", "/Windows/System32", volume).stdout.split()
    assert {"cmd.exe", "config", "drivers"} <= set(listing)
    cmd = subprocess.run([need_tool("ntfscat"), volume, "/Windows/System32/cmd.exe"], capture_output=True, check=True)
    described = subprocess.run([need_tool("file"), "-b", "-"], input=cmd.stdout, capture_output=True, check=True)
    assert described.stdout.startswith(b"PE32+ executable (console) x86-64")
