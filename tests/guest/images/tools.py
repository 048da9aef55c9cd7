"""Helpers the builders share: run a tool, write into a guest root safely, copy sparse regions."""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

MiB = 1 << 20
TiB = 1 << 40


class ImageBuildError(RuntimeError):
    """A tool failed while building an image; the message carries its stderr."""


def run(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, input: bytes | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool; a failure raises ImageBuildError with the tool's stderr."""
    full_env = {**os.environ, **(env or {})}
    try:
        return subprocess.run(list(args), env=full_env, input=input, capture_output=True, check=True, timeout=timeout)
    except subprocess.CalledProcessError as error:
        stderr = error.stderr.decode(errors="replace").strip()[-3000:]
        raise ImageBuildError(f"{shlex.join(args)} failed ({error.returncode}): {stderr}") from error


def resolve_in_root(root: Path, guest_path: str, *, follow_last: bool = True) -> Path:
    """``guest_path`` inside ``root`` with symlinks resolved as the guest sees them.

    An absolute link restarts at ``root`` and ``..`` stops there, so a guest link to
    ``/etc`` or ``../../..`` can never make a builder write outside the root.
    """
    todo = [part for part in guest_path.split("/") if part]
    todo.reverse()
    parts: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        candidate = root.joinpath(*parts, part)
        if candidate.is_symlink() and (todo or follow_last):
            links += 1
            if links > 40:
                raise ImageBuildError(f"too many levels of symbolic links in {guest_path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                parts = []
            todo.extend(reversed([p for p in target.split("/") if p]))
            continue
        parts.append(part)
    return root.joinpath(*parts)


def guest_dir(root: Path, guest_dir: str) -> Path:
    path = resolve_in_root(root, guest_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def install_file(root: Path, guest_path: str, data: bytes, mode: int = 0o644) -> Path:
    """Write a guest file. A file already there is unlinked first, never written through
    (it may be a hard link to another root's file)."""
    parent, name = guest_path.rstrip("/").rsplit("/", 1)
    target = guest_dir(root, parent or "/") / name
    if target.is_symlink() or target.exists():
        target.unlink()
    target.write_bytes(data)
    target.chmod(mode)
    return target


def symlink(root: Path, guest_path: str, target: str) -> None:
    parent, name = guest_path.rstrip("/").rsplit("/", 1)
    link = guest_dir(root, parent or "/") / name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def read_os_release(root: Path) -> dict[str, str]:
    """os-release as the guest's systemd reads it: /etc first, then /usr/lib."""
    for guest_path in ("/etc/os-release", "/usr/lib/os-release"):
        path = resolve_in_root(root, guest_path)
        if path.is_file():
            values = {}
            for line in path.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep and not key.startswith("#"):
                    values[key.strip()] = " ".join(shlex.split(value))
            return values
    return {}


def tree_size(tree: Path) -> int:
    """Bytes the tree needs on a filesystem: 4 KiB blocks plus an inode's worth per entry."""
    total = 0
    for directory, dirs, files in os.walk(tree):
        for name in (*dirs, *files):
            size = os.lstat(os.path.join(directory, name)).st_size
            total += (size + 4095) // 4096 * 4096 + 4096
    return total


def round_mib(size: float) -> int:
    return (int(size) + MiB - 1) // MiB * MiB


def copy_region(src: Path, dst: Path, *, src_offset: int = 0, dst_offset: int = 0, length: int | None = None) -> None:
    """Copy ``length`` bytes of ``src`` into the existing ``dst``, skipping holes so images stay sparse."""
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        end = src_offset + length if length is not None else os.fstat(fin.fileno()).st_size
        pos = src_offset
        while pos < end:
            try:
                data = os.lseek(fin.fileno(), pos, os.SEEK_DATA)
            except OSError as error:
                if error.errno == errno.ENXIO:  # nothing but a hole is left
                    break
                raise
            if data >= end:
                break
            hole = min(os.lseek(fin.fileno(), data, os.SEEK_HOLE), end)
            _copy_bytes(fin.fileno(), fout.fileno(), data, dst_offset + data - src_offset, hole - data)
            pos = hole


def _copy_bytes(fd_in: int, fd_out: int, src: int, dst: int, count: int) -> None:
    """copy_file_range, or read and write where the filesystem cannot (EXDEV, EINVAL, ENOSYS)."""
    done = 0
    try:
        while done < count:
            copied = os.copy_file_range(fd_in, fd_out, count - done, src + done, dst + done)
            if copied == 0:
                raise ImageBuildError("copy_file_range: unexpected end of file")
            done += copied
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        while done < count:
            chunk = os.pread(fd_in, min(count - done, 8 << 20), src + done)
            if not chunk:
                raise ImageBuildError("short read while copying a region") from error
            os.pwrite(fd_out, chunk, dst + done)
            done += len(chunk)


def extract_region(image: Path, offset: int, length: int, out: Path) -> Path:
    """A sparse copy of one region of ``image`` (a partition, an LV) as a file of its own."""
    with open(out, "wb") as handle:
        handle.truncate(length)
    copy_region(image, out, src_offset=offset, length=length)
    return out


def new_file(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


@contextmanager
def scratch_file(near: Path, suffix: str) -> Iterator[Path]:
    """A temporary file beside ``near`` (same filesystem, so copy_file_range stays cheap)."""
    handle, name = tempfile.mkstemp(prefix=f".{near.name}.", suffix=suffix, dir=near.parent)
    os.close(handle)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
