"""The hook's entry point: what the installed shim runs, and what ``cpuguard hook run`` calls.

libvirt waits for the hook on every VM start and incoming migration, so
this path imports only what a decision needs (no click; no PyYAML while the
precompiled context in :mod:`cpuguard.hook.cache` is current).

Arguments: ``[--config PATH] [--cache-dir DIR | --no-cache] [--deadline SECONDS]
[--on-error-exit N] [--audit-log PATH] [--] VM OPERATION SUB-OPERATION [EXTRA]``,
the domain XML on stdin. ``--deadline`` bounds reading the configuration (then
its ``deadline_seconds`` applies); ``--on-error-exit`` and ``--audit-log`` apply
only when the configuration itself cannot be read (the shim passes what
``cpuguard hook install`` found). Nothing is ever written to stdout: for ``migrate`` and
``restore`` libvirt would take it as a replacement domain XML.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cpuguard.hook.events import guarded_operation
from cpuguard.hook.journal import PER_CALL

if TYPE_CHECKING:
    from cpuguard.config import Config
    from cpuguard.hook.context import HookContext
    from cpuguard.hook.decision import HookResult
    from cpuguard.hook.memo import Call

DEFAULT_CONFIG = Path("/etc/cpuguard/config.yaml")
DEFAULT_DEADLINE = 5.0
EXIT_USAGE = 2
USAGE = (
    "usage: cpuguard-hook [--config PATH] [--cache-dir DIR | --no-cache] [--deadline SECONDS] "
    "[--on-error-exit N] [--audit-log PATH] VM OPERATION SUB-OPERATION [EXTRA]"
)


class UsageError(Exception):
    pass


class HookTimeout(Exception):
    """The decision took longer than ``deadline_seconds``."""


class ClientGaveUp(Exception):
    """In ``cpuguard hook serve``: the hook stopped waiting for this answer and decides itself."""


@dataclass(frozen=True)
class Requester:
    """Who asked for the decision (for the audit log): the hook process and its parent."""

    pid: int
    caller: str | None  # the parent's name: libvirtd, virtqemud, a shell
    decided_in: str = "hook"  # "hook" (this process) or "server" (cpuguard hook serve)

    @classmethod
    def this_process(cls) -> Requester:
        return cls(os.getpid(), parent_name())


@dataclass(frozen=True)
class Options:
    config: Path = DEFAULT_CONFIG
    cache_dir: Path | None = Path("/var/cache/cpuguard")
    deadline: float = DEFAULT_DEADLINE  # until the configuration's deadline_seconds is known
    on_error_exit: int | None = None  # when the config cannot be read; None: cpuguard's default
    audit_log: Path | None = None  # when the config cannot be read (see fallback_audit_log)


def parse_args(argv: Sequence[str]) -> tuple[Options, list[str]]:
    values: dict[str, Any] = {}
    words: list[str] = []
    items = list(argv)
    while items:
        item = items.pop(0)
        if item == "--":
            words.extend(items)
            break
        if item == "--no-cache":
            values["cache_dir"] = None
        elif item in ("--config", "--cache-dir", "--deadline", "--on-error-exit", "--audit-log"):
            if not items:
                raise UsageError(f"{item} needs a value")
            value = items.pop(0)
            key = item[2:].replace("-", "_")
            if key == "on_error_exit":
                if value not in ("0", "1"):
                    raise UsageError(f"--on-error-exit must be 0 or 1, not {value!r}")
                values[key] = int(value)
            elif key == "deadline":
                try:
                    values[key] = float(value)
                except ValueError:
                    raise UsageError(f"--deadline must be a number of seconds, not {value!r}") from None
                if not values[key] > 0:
                    raise UsageError("--deadline must be positive")
            else:
                values[key] = Path(value)
        elif item.startswith("--"):
            raise UsageError(f"unknown option {item}")
        else:
            words.append(item)
    return Options(**values), words


@contextmanager
def deadline(seconds: float, started: float, *, cap: float | None = None) -> Iterator[Callable[[float, str], None]]:
    """Raise HookTimeout in the main thread ``seconds`` after ``started`` (time.monotonic()), or
    ClientGaveUp at ``cap`` (a time.monotonic() value) if that comes first.

    Yields ``arm(seconds, source)`` to replace the limit (counted from ``started``, too).
    """
    import signal

    limit = (seconds, "--deadline")
    capped = False

    def expired(_signum: int, _frame: object) -> None:
        if capped:
            raise ClientGaveUp()
        raise HookTimeout(f"no decision within {limit[0]:g} s ({limit[1]})")

    def arm(seconds: float, source: str) -> None:
        nonlocal limit, capped
        limit = (seconds, source)
        ends = started + seconds
        capped = cap is not None and cap < ends
        if cap is not None:
            ends = min(ends, cap)
        signal.setitimer(signal.ITIMER_REAL, max(ends - time.monotonic(), 0.001))

    previous = signal.signal(signal.SIGALRM, expired)
    arm(seconds, "--deadline")
    try:
        yield arm
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def describe(exc: BaseException) -> str:
    """One line for any failure: cpuguard's own errors as they are, anything else marked a bug."""
    from cpuguard.errors import CpuguardError

    if isinstance(exc, CpuguardError | HookTimeout):
        text = str(exc)
    else:
        text = f"internal error (a bug, please report it): {type(exc).__name__}: {exc}"
    return " ".join(text.split())


def syslog_error(message: str) -> None:
    """Errors go to syslog too: on an allowed start libvirt drops the hook's stderr."""
    from cpuguard.hook import journal

    journal.syslog_error(message)


def parent_name(proc: Path = Path("/proc")) -> str | None:
    """Who ran the hook (``libvirtd``, ``virtqemud``, a shell): lets ``hook status`` prove libvirt runs it."""
    try:
        return (proc / str(os.getppid()) / "comm").read_text().strip() or None
    except OSError:
        return None


def handle(
    vm: str,
    operation: str,
    libvirt_call: str,
    domain_xml: bytes,
    options: Options,
    *,
    nodename: str,
    now: Callable[[], datetime],
    requester: Requester,
    started: float,
    answer_by: float | None = None,
    call: Call | None = None,
    proc_stat: Path = Path("/proc/stat"),
) -> tuple[HookResult, Path | None, Callable[[], None] | None]:
    """Decide, following ``on_error`` when cpuguard fails. Returns the result, the audit log path
    (None: unknown, see :func:`fallback_audit_log`) and what remembers the decision, to be called
    once it is out.

    The deadline counts from ``started``, the hook's start. In the server, ``answer_by`` is when the
    hook stops waiting: :class:`ClientGaveUp` is raised then, and nothing must be logged. A decision
    can be remembered for ``call`` (:mod:`cpuguard.hook.memo`) when the arguments allow it.
    """
    from cpuguard.hook.decision import Event, error_result

    event = Event(vm, operation, libvirt_call)
    context = None
    audit_log: Path | None
    later: Callable[[], None] | None = None
    try:
        with deadline(options.deadline, started, cap=answer_by) as rearm:
            from cpuguard.hook.cache import load_or_build
            from cpuguard.hook.decision import decide_event
            from cpuguard.hook.hostfacts import local_host

            context = load_or_build(options.config, options.cache_dir)
            rearm(context.config.deadline_seconds, "deadline_seconds")
            local = local_host(context, nodename=nodename, proc_stat=proc_stat)
            result = decide_event(event, domain_xml, context, local, now())
    except ClientGaveUp:
        raise
    except Exception as exc:
        config = context.config if context is not None else readable_config(options.config)
        if config is not None:
            on_error = config.on_error
            audit_log = config.audit_log
            host = config.host_name or (context.snapshot.name if context and context.snapshot else "") or nodename
        else:
            from cpuguard.config import DEFAULT_ON_ERROR

            on_error = dict(DEFAULT_ON_ERROR)
            if options.on_error_exit is not None:
                on_error[operation] = "block" if options.on_error_exit else "allow"
            audit_log = fallback_audit_log(options)
            host = nodename
        config_path = str(options.config)
        result = error_result(event, describe(exc), on_error=on_error, host=host, now=now(), config_path=config_path)
    else:
        audit_log = context.config.audit_log
        if call is not None and local.version is not None:  # /proc/cpuinfo is read anew every time
            decided, when = result, now().timestamp()
            later = partial(remember, call, domain_xml, context, decided, audit_log, nodename, when)
    result.record.update(
        pid=requester.pid,
        caller=requester.caller,
        decided_in=requester.decided_in,
        elapsed_ms=round((time.monotonic() - started) * 1000, 1),
    )
    return result, audit_log, later


def remember(
    call: Call, xml: bytes, context: HookContext, result: HookResult, audit_log: Path, nodename: str, now: float
) -> None:
    """Keep the decision for the next identical call; failing costs speed, never a decision.
    ``now`` (wall clock, seconds) tells inputs too recent to be trusted (cpuguard.hook.cache)."""
    from cpuguard.hook import memo
    from cpuguard.hook.audit import segments
    from cpuguard.hook.cache import RACY_SECONDS
    from cpuguard.hook.context import loaded_package_files
    from cpuguard.hook.hostfacts import LocalHost, host_name, snapshot_time, stale_host

    snapshot, version = context.snapshot, context.snapshot_version
    if result.restate is None or snapshot is None or version is None:
        return
    # Said with a fresh and with a stale snapshot: whether it predates the boot is checked at answer time.
    facts = replace(snapshot, name=host_name(context, nodename))
    variants = []
    for local in (LocalHost(facts, version), stale_host(facts, version, context.config, memo.BOOT_PLACEHOLDER)):
        restated = result.restate(local)
        restated.record.update({key: result.record[key] for key in PER_CALL})
        variants.append(memo.Variant(restated.message, segments(restated.record)))
    captured = snapshot_time(facts, version) - datetime(1970, 1, 1, tzinfo=UTC)
    inputs = [*context.inputs, *loaded_package_files(), *memo.fast_path_files()]
    with suppress(OSError):
        memo.store(
            call,
            xml,
            nodename=nodename,
            exit_code=result.exit_code,
            captured_us=captured // timedelta(microseconds=1),
            fresh=variants[0],
            stale=variants[1],
            audit_log=str(audit_log),
            inputs=inputs,
            now=now,
            racy_seconds=RACY_SECONDS,
        )


def remembered_call(argv: Sequence[str], options: Options) -> Call | None:
    """The call as the memo keys it, when decisions are cached at all."""
    if options.cache_dir is None:
        return None
    from cpuguard.hook.memo import parse_call

    return parse_call(argv)


def fallback_audit_log(options: Options) -> Path | None:
    """Where to log when the configuration cannot be read: what the shim passes (``--audit-log``);
    cpuguard's default log only for the default configuration; else nowhere (another configuration
    may well name another log, and a test run must not land in the system's)."""
    if options.audit_log is not None:
        return options.audit_log
    if options.config == DEFAULT_CONFIG:
        from cpuguard.config import Config

        return Config(None).audit_log
    return None


def readable_config(path: Path) -> Config | None:
    """The configuration when the file itself is fine (and something it names is not); else None."""
    from cpuguard.config import read_config

    try:
        return read_config(path)
    except Exception:
        return None


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: IO[bytes] | None = None,
    stderr: IO[str] | None = None,
    nodename: str | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    requester: Requester | None = None,
    started: float | None = None,
    answer_by: float | None = None,
    answered: Callable[[int], None] | None = None,
    proc_stat: Path = Path("/proc/stat"),
) -> int:
    """Run one hook call; returns the exit code (1 blocks the operation).

    ``started`` is when the hook process started (``time.monotonic()``; default: now): the deadline
    counts from there. ``answer_by`` (the server only): when the hook stops waiting for the answer;
    past it, nothing is logged and :data:`~cpuguard.hook.client.DECIDE_YOURSELF` is returned.
    ``answered`` (the server only) is called with the exit code once the decision is logged and
    said, before it is remembered, so that the hook need not wait for that.
    """
    started = time.monotonic() if started is None else started
    err = stderr or sys.stderr
    try:
        options, words = parse_args(sys.argv[1:] if argv is None else argv)
        if len(words) < 3:
            raise UsageError("expected VM OPERATION SUB-OPERATION")
    except UsageError as exc:
        err.write(f"cpuguard hook: {exc}\n{USAGE}\n")
        return EXIT_USAGE
    vm, libvirt_op, sub_op = words[:3]
    operation = guarded_operation(libvirt_op, sub_op)
    if operation is None:
        return 0
    domain_xml = (stdin or sys.stdin.buffer).read()
    try:
        result, audit_log, remember_it = handle(
            vm,
            operation,
            f"{libvirt_op} {sub_op}",
            domain_xml,
            options,
            nodename=nodename or os.uname().nodename,
            now=now,
            requester=requester or Requester.this_process(),
            started=started,
            answer_by=answer_by,
            call=remembered_call(argv if argv is not None else sys.argv[1:], options),
            proc_stat=proc_stat,
        )
    except ClientGaveUp:
        from cpuguard.hook.client import DECIDE_YOURSELF

        return DECIDE_YOURSELF
    from cpuguard.hook.audit import encode
    from cpuguard.hook.journal import deliver

    log = str(audit_log) if audit_log is not None else None
    deliver(log, encode(result.record), result.message, vm=vm, operation=operation, err=err)
    if result.record.get("verdict") == "error":
        syslog_error(result.message)
    if answered is not None:
        answered(int(result.exit_code))
    if remember_it is not None:
        remember_it()
    return int(result.exit_code)
