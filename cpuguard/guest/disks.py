"""Which files make up a guest's disks, and which backing files may be opened.

A disk is a top image and its backing chain. The chain is taken from:

* the domain XML's ``<backingStore>`` elements, which libvirt writes for a
  running VM (https://libvirt.org/formatdomain.html#hard-drives-floppy-disks-cdroms,
  "backingStore"): every image header must then name exactly the file the
  XML names, else the disk is refused;
* the image headers, when the XML has no ``<backingStore>`` (``virsh dumpxml
  --inactive``): followed the way QEMU follows them when libvirt starts that
  VM, but only links with an explicit backing format (QEMU would otherwise
  probe the format, which lets a guest turn a raw image into something else);
* for a bare image (``scan --disk``), nothing vouches for a backing file
  named in its header: a customer's image may point it at any host file.
  Such an image is refused unless the caller asks to follow the headers.

Headers are read with ``qemu-img info --force-share`` (no lock that could
disturb a running VM; ``info`` without ``--backing-chain`` never opens the
backing file itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.guest.errors import one_line
from cpuguard.guest.records import CHAIN_HEADERS, CHAIN_NONE, CHAIN_OPTION, CHAIN_XML, Disk, Layer
from cpuguard.xmlsafe import MAX_XML_BYTES, parse_xml, read_bytes

#: Image formats cpuguard hands to the appliance. Others (vmdk, vdi...) are refused:
#: every format is parser code run on a customer's bytes.
FORMATS = ("raw", "qcow2")
MAX_CHAIN = 32
QEMU_IMG_TIMEOUT = 60.0

#: ``qemu-img info`` of one image: (path, format or None to probe) -> its JSON.
ImageInfo = Callable[[str, "str | None"], dict[str, Any]]


def qemu_img_info(path: str, fmt: str | None, *, timeout: float = QEMU_IMG_TIMEOUT) -> dict[str, Any]:
    """The header of one image, without opening its backing file, under a shared lock."""
    command = ["qemu-img", "info", "--output=json", "--force-share"]
    if fmt is not None:
        command += ["-f", fmt]
    command.append(path)
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise BadInput(path, "qemu-img is not installed (Debian package qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise BadInput(path, f"qemu-img gave no answer within {timeout:g} s") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = lines[0] if lines else f"exit status {done.returncode}"
        reason = reason.removeprefix("qemu-img: ").removeprefix(f"Could not open '{path}': ")
        raise BadInput(path, f"not a readable disk image: {one_line(reason)}")
    try:
        data = json.loads(done.stdout)
    except ValueError:
        raise BadInput(path, "qemu-img gave unreadable output") from None
    if not isinstance(data, dict):
        raise BadInput(path, "qemu-img gave unreadable output")
    return data


def _stat_identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class _Chain:
    """Walks one disk's chain, refusing loops, overlong chains and unvouched links."""

    def __init__(self, target: str, info: ImageInfo) -> None:
        self.target = target
        self.info = info
        self.seen: set[tuple[int, int] | str] = set()
        self.layers: list[Layer] = []

    def fail(self, path: str, problem: str) -> BadInput:
        return BadInput(f"disk {self.target} ({path})", problem)

    def add(self, path: str, fmt: str | None) -> dict[str, Any]:
        if len(self.layers) >= MAX_CHAIN:
            raise self.fail(path, f"backing chain longer than {MAX_CHAIN} images")
        key: tuple[int, int] | str = _stat_identity(path) or os.path.realpath(path)
        if key in self.seen:
            raise self.fail(path, "backing-file loop: this image is already part of the chain")
        self.seen.add(key)
        if fmt is not None and fmt not in FORMATS:
            raise self.fail(path, f"image format {fmt!r} is not read (only {', '.join(FORMATS)})")
        try:
            header = self.info(path, fmt)
        except BadInput as exc:
            raise self.fail(path, exc.problem) from None
        found = str(header.get("format", ""))
        if found not in FORMATS:
            raise self.fail(path, f"image format {found!r} is not read (only {', '.join(FORMATS)})")
        self.layers.append(Layer(path, found))
        return header


def _backing(header: dict[str, Any]) -> tuple[str | None, str | None]:
    """(absolute backing file, its declared format) named by an image header."""
    name = header.get("full-backing-filename") or header.get("backing-filename")
    fmt = header.get("backing-filename-format")
    return (str(name) if name else None), (str(fmt) if fmt else None)


def resolve_chain(
    target: str,
    path: str,
    fmt: str | None,
    *,
    vouched: Sequence[Layer] | None,
    follow_headers: bool,
    explicit_option: bool = False,
    kind: str = "file",
    info: ImageInfo = qemu_img_info,
) -> Disk:
    """The layers of one disk, every one checked before anything opens it.

    ``vouched`` is the chain the domain XML gives (``[]``: the XML says the
    image has no backing file; None: the XML says nothing). With nothing
    vouched, header links are followed only when ``follow_headers``.
    """
    chain = _Chain(target, info)
    header = chain.add(path, fmt)
    chain_from = CHAIN_NONE
    remaining = list(vouched) if vouched is not None else None
    while True:
        backing, backing_fmt = _backing(header)
        current = chain.layers[-1].path
        if backing is None:
            if remaining:
                raise chain.fail(current, f"the domain XML names backing file {remaining[0].path}, the image has none")
            break
        if remaining is not None:
            if not remaining:
                raise chain.fail(current, f"the image names backing file {backing!r}, the domain XML names none")
            expected = remaining.pop(0)
            if os.path.realpath(expected.path) != os.path.realpath(backing):
                raise chain.fail(
                    current,
                    f"the image names backing file {backing!r}, the domain XML names {expected.path!r}: refusing",
                )
            chain_from = CHAIN_XML
            header = chain.add(backing, expected.format or backing_fmt)
            continue
        if not follow_headers:
            raise chain.fail(
                current,
                f"its header names a backing file ({backing!r}) that nothing vouches for; "
                "give the VM's domain XML (scan --guest), or pass --follow-backing if you trust this image",
            )
        if backing_fmt is None:
            raise chain.fail(
                current,
                f"its header names backing file {backing!r} without a backing format; "
                "QEMU would probe it, cpuguard does not (set one with qemu-img rebase -F)",
            )
        chain_from = CHAIN_OPTION if explicit_option else CHAIN_HEADERS
        header = chain.add(backing, backing_fmt)
    return Disk(target, kind, tuple(chain.layers), chain_from)


def _source(element: ET.Element, kind: str) -> str | None:
    source = element.find("source")
    if source is None:
        return None
    return source.get("dev") if kind == "block" else source.get("file")


def _vouched_chain(disk: ET.Element, where: str) -> list[Layer] | None:
    """The ``<backingStore>`` chain of a ``<disk>`` (None when the XML has none)."""
    node = disk.find("backingStore")
    if node is None:
        return None
    chain: list[Layer] = []
    while node is not None and len(node):  # an empty <backingStore/> ends the chain
        kind = node.get("type", "file")
        if kind not in ("file", "block"):
            raise BadInput(where, f"backing store of type {kind!r} is not read (only file and block)")
        path = _source(node, kind)
        if not path or not os.path.isabs(path):
            raise BadInput(where, "a <backingStore> without an absolute source path")
        fmt_el = node.find("format")
        chain.append(Layer(path, fmt_el.get("type", "") if fmt_el is not None else ""))
        if len(chain) > MAX_CHAIN:
            raise BadInput(where, f"backing chain longer than {MAX_CHAIN} images")
        node = node.find("backingStore")
    return chain


def domain_disks(text: bytes, where: str) -> tuple[str, list[tuple[str, str, str, str | None, list[Layer] | None]]]:
    """(domain name, [(target, kind, path, format, vouched chain)]) of the hard disks in a domain XML.

    CD-ROMs and floppies are not the guest's system; network disks cannot be
    read from a file and are refused here, naming the disk.
    """
    root = parse_xml(text, where, root="domain")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise BadInput(where, "domain XML has no <name>")
    disks = []
    for index, disk in enumerate(root.findall("devices/disk")):
        if disk.get("device", "disk") not in ("disk", "lun"):
            continue
        target_el = disk.find("target")
        target = (target_el.get("dev") if target_el is not None else None) or f"disk{index + 1}"
        kind = disk.get("type", "file")
        if kind not in ("file", "block"):
            raise BadInput(where, f"disk {target}: a {kind!r} disk cannot be read from this host (only file and block)")
        path = _source(disk, kind)
        if not path:
            continue  # an empty drive
        if not os.path.isabs(path):
            raise BadInput(where, f"disk {target}: source {path!r} is not an absolute path")
        driver = disk.find("driver")
        fmt = driver.get("type") if driver is not None else None
        disks.append((target, kind, path, fmt, _vouched_chain(disk, f"{where}: disk {target}")))
    return name, disks


def disks_of_domain(
    path: Path, *, info: ImageInfo = qemu_img_info, text: bytes | None = None
) -> tuple[str, list[Disk], list[str]]:
    """(VM name, its disks, notes) from a domain XML file; header chains followed as QEMU would."""
    data = text if text is not None else read_bytes(path, MAX_XML_BYTES)
    name, entries = domain_disks(data, str(path))
    if not entries:
        raise BadInput(path, "the domain has no file or block disk to read")
    disks: list[Disk] = []
    notes: list[str] = []
    for target, kind, source, fmt, vouched in entries:
        disk = resolve_chain(
            target, source, fmt or "raw", vouched=vouched, follow_headers=vouched is None, kind=kind, info=info
        )
        if disk.chain_from == CHAIN_HEADERS:
            notes.append(
                f"disk {target}: the domain XML gives no <backingStore>; the backing chain "
                f"({' -> '.join(layer.path for layer in disk.layers)}) came from the image headers"
            )
        disks.append(disk)
    return name, disks, notes


def disks_of_images(
    images: Sequence[Path], *, follow_backing: bool = False, info: ImageInfo = qemu_img_info
) -> tuple[list[Disk], list[str]]:
    """Bare images (``scan --disk``): formats probed (raw or qcow2 only), backing files
    refused unless ``follow_backing``."""
    disks: list[Disk] = []
    notes: list[str] = []
    for index, image in enumerate(images):
        path = os.path.abspath(image)
        if not os.path.exists(path):
            raise BadInput(image, "no such file")
        kind = "block" if Path(path).is_block_device() else "file"
        if not (kind == "block" or Path(path).is_file()):
            raise BadInput(image, "not a disk image file or block device")
        disk = resolve_chain(
            f"disk{index + 1}",
            path,
            None,
            vouched=None,
            follow_headers=follow_backing,
            explicit_option=follow_backing,
            kind=kind,
            info=info,
        )
        if disk.chain_from == CHAIN_OPTION:
            notes.append(
                f"disk{index + 1}: backing chain ({' -> '.join(layer.path for layer in disk.layers)}) "
                "followed from the image headers because --follow-backing was given"
            )
        disks.append(disk)
    return disks, notes
