"""Remembered decisions: a repeated hook call answered without importing cpuguard's core.

Starting Python takes about 10 ms; importing cpuguard's decision modules
several times that (docs/hook.md, "Speed"). But a VM's next start or
migration onto the same host usually asks the same question again, so the
full path (:mod:`cpuguard.hook.entry`) leaves its answer here -- exit code,
message, audit record -- and the shim's client looks it up first, needing
only ``os``, ``fcntl`` and a hash.

**Never a wrong answer.** An entry is used only when everything the
decision depended on is the same:

* the call: VM, operation, the configuration file as named, this host's
  node name;
* the domain XML's decisive text (:func:`cpuguard.hook.xmlkey.decision_key`:
  ``<name>``, ``<os><type>``, ``<cpu>``, the root's ``type`` and namespace
  declarations), compared byte for byte -- a document that key cannot vouch
  for is never looked up;
* every file the context cache is keyed on (configuration, policies,
  inventory and its host files, snapshot, cpu_map, cpuguard's data) and every
  cpuguard module loaded while deciding, by the same stat signature as the
  cache, with the same racy-clean rule: nothing is remembered while an input
  is younger than :data:`~cpuguard.hook.cache.RACY_SECONDS`.

**Not the boot.** Whether the snapshot predates the last boot (``btime`` in
/proc/stat) changes the message and the audit record (a warning,
``"stale": true``), never the verdict; so the boot time is not part of the
key, or every first decision after a reboot -- when a host starts all its
VMs -- would take the full path. An entry keeps the snapshot's capture time
and the answer twice: as given with a fresh snapshot, and with a stale one,
where the boot time in the warning is a placeholder. At answer time the
memo compares the capture time with ``btime``, as
:func:`cpuguard.hook.hostfacts.local_host` does, and says the matching one.

Only decisions are remembered, never errors (``on_error``), and not when the
hook fell back to /proc/cpuinfo (read anew each time). A new context cache
clears the memo; an entry whose files changed is never used anyway.

**Trust.** Entries live in ``<cache_dir>/<config tag>.memo/`` (0700); one
is read only if it is a regular file owned by this user and writable by no
one else, as the context cache is. The format is plain text fields
separated by NUL bytes, which none of them can hold (paths, JSON, the XML key
-- XML with NUL is never keyed): nothing in it is evaluated.
"""

from __future__ import annotations

import os
import sys

from cpuguard import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy understands this form)
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import IO

DEFAULT_CONFIG = "/etc/cpuguard/config.yaml"
DEFAULT_CACHE_DIR = "/var/cache/cpuguard"
MAGIC = b"cpuguard-hook-memo-2"
#: The audit line in pieces around its per-call fields (cpuguard.hook.journal.PER_CALL, five of them).
SEGMENTS = 6
#: The entry's fields before its (path, signature) pairs: magic, header, key (hex), exit code, the
#: snapshot's capture time (microseconds since the epoch), audit log, the message and the segments with a
#: fresh snapshot, then both with a stale one (:data:`BOOT_PLACEHOLDER` standing for the boot time).
HEAD_FIELDS = 6 + 2 * (1 + SEGMENTS)
#: Stands for the last boot's time in the stale-snapshot variant of an answer (JSON needs no escape for it).
BOOT_PLACEHOLDER = "{cpuguard-last-boot}"
#: How cpuguard.hook.hostfacts writes the boot time in its warning (strftime, UTC).
BOOT_FORMAT = "%Y-%m-%d %H:%M"
#: The modules of the memo path, whose code a remembered decision also depends on.
FAST_PATH_MODULES = ("client", "memo", "xmlkey", "journal")
#: A memo directory with more entries than this is cleared before the next is added.
MAX_ENTRIES = 4096
#: libvirt operation -> cpuguard operation, as cpuguard.hook.events.GUARDED (which this must not import)
_GUARDED = {"migrate": "migrate", "restore": "restore", "prepare": "start"}
_OPTIONS = ("--config", "--cache-dir", "--deadline", "--on-error-exit", "--audit-log")


def header() -> bytes:
    return f"{__version__}\n{sys.version}".encode()


class Call:
    """The parts of the hook's arguments a remembered decision depends on (the entry's grammar)."""

    def __init__(self, config: str, cache_dir: str | None, vm: str, operation: str, libvirt: str) -> None:
        self.config = config
        self.cache_dir = cache_dir
        self.vm = vm
        self.operation = operation  # migrate | restore | start
        self.libvirt = libvirt  # "migrate begin"


def parse_call(args: Sequence[str]) -> Call | None:
    """The call, or None for anything the entry would refuse or not check (it then says so itself)."""
    values = {"--config": DEFAULT_CONFIG, "--cache-dir": DEFAULT_CACHE_DIR}
    items = list(args)
    cache = True
    while items and items[0] != "--":
        option = items.pop(0)
        if option == "--no-cache":
            cache = False
        elif option in _OPTIONS and items:
            values[option] = items.pop(0)
        else:
            return None
    words = items[1:]
    if len(words) < 3 or words[2] != "begin" or words[1] not in _GUARDED:
        return None
    cache_dir = values["--cache-dir"] if cache else None
    return Call(values["--config"], cache_dir, words[0], _GUARDED[words[1]], f"{words[1]} {words[2]}")


def boot_time(proc_stat: str = "/proc/stat") -> int | None:
    """``btime`` of /proc/stat in seconds, or None when unknown, read as
    :func:`cpuguard.hook.hostfacts.boot_time` reads it (then no snapshot counts as stale)."""
    try:
        with open(proc_stat, "rb") as handle:
            for line in handle:
                if line.startswith(b"btime "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def stale_variant(captured_us: int, proc_stat: str = "/proc/stat") -> str | None:
    """The last boot's time as the stale-snapshot warning writes it when the snapshot captured at
    ``captured_us`` predates it; None when the snapshot is not stale."""
    booted = boot_time(proc_stat)
    if booted is None or captured_us >= booted * 1_000_000:
        return None
    import time

    return time.strftime(BOOT_FORMAT, time.gmtime(booted))


def config_tag(config: str) -> str:
    """One cache per configuration directory, named by its device and inode: stable while the file
    is edited, distinct for daemons that each see their own /etc/cpuguard (mount namespaces)."""
    try:
        st = os.stat(os.path.dirname(config) or ".")
        where = f"{st.st_dev:x}-{st.st_ino:x}"
    except OSError:
        where = "none"
    return f"hook-{where}-{os.path.basename(config)}"


def memo_dir(cache_dir: str, config: str) -> str:
    return os.path.join(cache_dir, config_tag(config) + ".memo")


def make_key(call: Call, xml_key: bytes, *, nodename: str) -> bytes:
    fields = [call.vm, call.operation, call.libvirt, call.config, nodename]
    return b"\0".join([*(os.fsencode(f) for f in fields), xml_key])


def entry_name(key: bytes) -> str:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]  # no OpenSSL to load
    except ImportError:
        from hashlib import sha256
    return str(sha256(key).hexdigest())


def signature(path: str) -> bytes:
    """cpuguard.hook.cache's stat signature, as text."""
    try:
        st = os.stat(path)
    except OSError:
        return b"-"
    return b"%d %d %d %d %d" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_trusted(path: str) -> bytes | None:
    """The file's bytes if it is a regular file owned by this user and writable by no one else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or (st.st_mode & 0o170000) != 0o100000:
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class Variant:
    """What a decision says and logs: its message and its audit line in segments (cpuguard.hook.journal)."""

    def __init__(self, message: str, segments: Sequence[bytes]) -> None:
        self.message = message
        self.segments = list(segments)


class Remembered:
    """A decision found in the memo: what to say and what to log."""

    def __init__(self, exit_code: int, message: str, audit_log: str, segments: list[bytes]) -> None:
        self.exit_code = exit_code
        self.message = message
        self.audit_log = audit_log
        self.segments = segments  # the audit line around its per-call fields (cpuguard.hook.journal)


def lookup(
    args: Sequence[str], xml: bytes, *, nodename: str | None = None, proc_stat: str = "/proc/stat"
) -> tuple[Call, Remembered] | None:
    """The remembered decision for this call, or None (the full path decides). Reads, writes nothing."""
    call = parse_call(args)
    if call is None or call.cache_dir is None:
        return None
    from cpuguard.hook.xmlkey import decision_key

    xml_key = decision_key(xml)
    if xml_key is None:
        return None
    key = make_key(call, xml_key, nodename=nodename or os.uname().nodename)
    data = read_trusted(os.path.join(memo_dir(call.cache_dir, call.config), entry_name(key)))
    if data is None:
        return None
    fields = data.split(b"\0")
    if len(fields) < HEAD_FIELDS or (len(fields) - HEAD_FIELDS) % 2:
        return None
    if fields[0] != MAGIC or fields[1] != header() or fields[2] != key.hex().encode():
        return None
    pairs = fields[HEAD_FIELDS:]
    for index in range(0, len(pairs), 2):
        if signature(os.fsdecode(pairs[index])) != pairs[index + 1]:
            return None
    booted = stale_variant(int(fields[4]), proc_stat)
    if booted is None:
        message, segments = fields[6], fields[7 : 7 + SEGMENTS]
    else:
        placeholder = BOOT_PLACEHOLDER.encode()
        message = fields[7 + SEGMENTS].replace(placeholder, booted.encode())
        segments = [s.replace(placeholder, booted.encode()) for s in fields[8 + SEGMENTS : HEAD_FIELDS]]
    return call, Remembered(int(fields[3]), message.decode(), os.fsdecode(fields[5]), segments)


def store(
    call: Call,
    xml: bytes,
    *,
    nodename: str,
    exit_code: int,
    captured_us: int,
    fresh: Variant,
    stale: Variant,
    audit_log: str,
    inputs: Iterable[str],
    now: float,
    racy_seconds: float,
) -> bool:
    """Remember a decision (the full path's) as said with a fresh snapshot and with a stale one
    (:data:`BOOT_PLACEHOLDER` for the boot time); False when it cannot be (see the module doc)."""
    from cpuguard.hook.xmlkey import decision_key

    if call.cache_dir is None:
        return False
    xml_key = decision_key(xml)
    if xml_key is None or len(fresh.segments) != SEGMENTS or len(stale.segments) != SEGMENTS:
        return False
    placeholder = BOOT_PLACEHOLDER.encode()
    fresh_text = [fresh.message.encode(), *fresh.segments]
    stale_text = [stale.message.encode(), *stale.segments]
    if any(placeholder in f for f in fresh_text) or not any(placeholder in f for f in stale_text):
        return False  # the placeholder must stand for the boot time only: then replacing it is exact
    paths = list(dict.fromkeys(inputs))
    signatures = [signature(p) for p in paths]
    for sig in signatures:
        if sig != b"-" and max(int(n) for n in sig.split()[3:]) / 1e9 > now - racy_seconds:
            return False  # a file changed within one timestamp tick could keep its signature
    key = make_key(call, xml_key, nodename=nodename)
    fields = [MAGIC, header(), key.hex().encode(), str(exit_code).encode(), str(captured_us).encode()]
    fields += [os.fsencode(audit_log), *fresh_text, *stale_text]
    for path, sig in zip(paths, signatures, strict=True):
        fields += [os.fsencode(path), sig]
    if any(b"\0" in field for field in fields):
        return False
    directory = memo_dir(call.cache_dir, call.config)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if len(os.listdir(directory)) >= MAX_ENTRIES:
        clear(call.cache_dir, call.config)
    _write(os.path.join(directory, entry_name(key)), b"\0".join(fields))
    return True


def _write(path: str, data: bytes) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".memo-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def clear(cache_dir: str, config: str) -> None:
    """Forget every remembered decision for this configuration (its context cache was rebuilt)."""
    directory = memo_dir(cache_dir, config)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            continue


def fast_path_files() -> list[str]:
    """cpuguard's files the memo path runs (cpuguard.__version__ is in the entry's header)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, f"{name}.py") for name in FAST_PATH_MODULES]


def answer(
    args: Sequence[str], xml: bytes, *, started: float, err: IO[str] | None = None, proc_stat: str = "/proc/stat"
) -> int | None:
    """The whole memo path for the client: the exit code after logging and saying the remembered
    decision, or None when the full path must decide (nothing was written then)."""
    import time

    try:
        found = lookup(args, xml, proc_stat=proc_stat)
    except (OSError, ValueError, IndexError, OverflowError):
        return None  # an unreadable or damaged entry: the full path decides (and rewrites it)
    if found is None:
        return None
    call, remembered = found
    from cpuguard.hook.client import parent_name
    from cpuguard.hook.journal import deliver, fill

    values: dict[str, str | int | float | None] = {
        "caller": parent_name() or None,
        "decided_in": "memo",
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        "pid": os.getpid(),
        "time": utc_now(),
    }
    line = fill(remembered.segments, values)
    stream = err if err is not None else sys.stderr
    deliver(remembered.audit_log, line, remembered.message, vm=call.vm, operation=call.operation, err=stream)
    return remembered.exit_code


def utc_now() -> str:
    """The audit record's ``time``: ISO 8601, UTC, milliseconds (as cpuguard.hook.decision writes it)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds")
