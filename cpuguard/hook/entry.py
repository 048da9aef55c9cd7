"""The hook's entry point: what the installed shim runs, and what ``cpuguard hook run`` calls.

libvirt waits for the hook on every VM start and incoming migration, so
this path imports only what a decision needs. With the precompiled context
current (:mod:`cpuguard.hook.cache`), that is the hook's few quick-path
modules, with no cpuguard core, no XML parser, no ``json``, no ``typing``
(docs/hook.md, "Speed"); the full path (:mod:`cpuguard.hook.decision`) is
imported only for what the quick one declines, to build the context, or to
report an error.

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

from cpuguard.hook.cache import DEFAULT_CACHE_DIR
from cpuguard.hook.events import guarded_operation

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy understands this form)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime
    from typing import IO, Any

    from cpuguard.hook.quick import Answer

DEFAULT_CONFIG = "/etc/cpuguard/config.yaml"
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


class Options:
    def __init__(
        self,
        config: str = DEFAULT_CONFIG,
        cache_dir: str | None = DEFAULT_CACHE_DIR,
        deadline: float = DEFAULT_DEADLINE,  # until the configuration's deadline_seconds is known
        on_error_exit: int | None = None,  # when the config cannot be read; None: cpuguard's default
        audit_log: str | None = None,  # when the config cannot be read (see fallback_audit_log)
    ) -> None:
        self.config = config
        self.cache_dir = cache_dir
        self.deadline = deadline
        self.on_error_exit = on_error_exit
        self.audit_log = audit_log

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Options) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Options({vars(self)})"


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
                values[key] = value
        elif item.startswith("--"):
            raise UsageError(f"unknown option {item}")
        else:
            words.append(item)
    return Options(**values), words


class Deadline:
    """Raise HookTimeout in the main thread ``seconds`` after ``started`` (time.monotonic());
    :meth:`arm` replaces the limit (counted from ``started``, too)."""

    def __init__(self, seconds: float, started: float) -> None:
        self.started = started
        self.limit = (seconds, "--deadline")

    def expired(self, _signum: int, _frame: object) -> None:
        raise HookTimeout(f"no decision within {self.limit[0]:g} s ({self.limit[1]})")

    def arm(self, seconds: float, source: str) -> None:
        import _signal  # type: ignore[import-not-found,unused-ignore]  # signal's enums cost more than a decision

        self.limit = (seconds, source)
        _signal.setitimer(_signal.ITIMER_REAL, max(self.started + seconds - time.monotonic(), 0.001))

    def __enter__(self) -> Deadline:
        import _signal  # type: ignore[import-not-found,unused-ignore]

        self.previous = _signal.signal(_signal.SIGALRM, self.expired)
        self.arm(*self.limit)
        return self

    def __exit__(self, *exc: object) -> None:
        import _signal  # type: ignore[import-not-found,unused-ignore]

        _signal.setitimer(_signal.ITIMER_REAL, 0)
        _signal.signal(_signal.SIGALRM, self.previous)


def describe(exc: BaseException) -> str:
    """One line for any failure: cpuguard's own errors as they are, anything else marked a bug."""
    from cpuguard.errors import CpuguardError

    if isinstance(exc, CpuguardError | HookTimeout):
        text = str(exc)
    else:
        text = f"internal error (a bug, please report it): {type(exc).__name__}: {exc}"
    return " ".join(text.split())


def parent_name(proc: str = "/proc") -> str | None:
    """Who ran the hook (``libvirtd``, ``virtqemud``, a shell): lets ``hook status`` prove libvirt runs it."""
    try:
        with open(f"{proc}/{os.getppid()}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def boot_time(proc_stat: str) -> int | None:
    """``btime`` of /proc/stat in seconds (as cpuguard.hook.hostfacts.boot_time reads it), or None."""
    try:
        with open(proc_stat, "rb") as handle:
            for line in handle:
                if line.startswith(b"btime "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def decide(
    vm: str,
    operation: str,
    libvirt_call: str,
    domain_xml: bytes,
    options: Options,
    *,
    nodename: str,
    now: Callable[[], datetime],
    started: float,
    proc_stat: str = "/proc/stat",
) -> tuple[Answer, str | None]:
    """Decide, following ``on_error`` when cpuguard fails. Returns the answer and the audit log
    (None: unknown, see :func:`fallback_audit_log`). The deadline counts from ``started``, the hook's start."""
    from cpuguard.hook.domainxml import read_guest
    from cpuguard.hook.quick import decide as quick_decision

    plain: dict[str, Any] | None = None
    try:
        with Deadline(options.deadline, started) as deadline:
            guest = read_guest(domain_xml)
            booted = boot_time(proc_stat)

            def quick(plain: dict[str, Any]) -> tuple[Answer | None, str]:
                audit_log: str = plain["config"]["audit_log"]
                deadline.arm(plain["config"]["deadline"], "deadline_seconds")
                stamp = now().isoformat(timespec="milliseconds")
                answer = quick_decision(
                    plain, vm, operation, libvirt_call, guest, nodename=nodename, now=stamp, booted=booted
                )
                return answer, audit_log

            plain, context = precompiled(options, now)
            try:
                answer, audit_log = quick(plain)
            except (KeyError, TypeError, ValueError):
                if context is not None:
                    raise  # built just now: a bug, which the error says
                # a cache that reads as JSON but not as a context (damaged, or by a bug): rebuild it
                plain = None
                plain, context = precompiled(options, now, cached=False)
                answer, audit_log = quick(plain)
            if answer is None:
                answer = full_decision(
                    vm, operation, libvirt_call, domain_xml, options, context, nodename, now, proc_stat
                )
    except Exception as exc:
        return error_answer(vm, operation, libvirt_call, exc, options, plain, nodename, now)
    return answer, audit_log


def precompiled(options: Options, now: Callable[[], datetime], *, cached: bool = True) -> tuple[dict[str, Any], Any]:
    """The plain context (:mod:`cpuguard.hook.plain`): from the cache when it is current (and
    ``cached``), else built, and cached, and returned with the
    :class:`~cpuguard.hook.context.HookContext` it was built from."""
    from cpuguard.hook import cache

    if options.cache_dir is not None and cached:
        plain = cache.load(options.cache_dir, options.config, now().timestamp())
        if plain is not None:
            return plain, None
    from pathlib import Path

    from cpuguard.hook.context import build_context
    from cpuguard.hook.plain import plain_context

    started = now()
    context = build_context(Path(options.config), started)
    plain = plain_context(context)
    if options.cache_dir is not None:
        from contextlib import suppress

        with suppress(OSError):  # a cache that cannot be written costs speed, never a decision
            # judged against the build's start: an input edited after the build read it is not cached
            cache.save(options.cache_dir, options.config, plain, context.inputs, started.timestamp())
    return plain, context


def full_decision(
    vm: str,
    operation: str,
    libvirt_call: str,
    domain_xml: bytes,
    options: Options,
    context: Any,
    nodename: str,
    now: Callable[[], datetime],
    proc_stat: str,
) -> Answer:
    """cpuguard's core decides (cpuguard.hook.decision): what the quick path declines, and why."""
    from pathlib import Path

    from cpuguard.hook.context import build_context
    from cpuguard.hook.decision import Event, decide_event
    from cpuguard.hook.hostfacts import local_host
    from cpuguard.hook.quick import Answer

    context = context or build_context(Path(options.config), now())
    local = local_host(context, nodename=nodename, proc_stat=Path(proc_stat))
    result = decide_event(Event(vm, operation, libvirt_call), domain_xml, context, local, now())
    return Answer(result.exit_code, result.message, result.record)


def error_answer(
    vm: str,
    operation: str,
    libvirt_call: str,
    exc: Exception,
    options: Options,
    plain: dict[str, Any] | None,
    nodename: str,
    now: Callable[[], datetime],
) -> tuple[Answer, str | None]:
    """cpuguard could not decide: ``on_error`` of the configuration, else of the shim, else cpuguard's default."""
    from cpuguard.hook.decision import Event, error_result
    from cpuguard.hook.quick import Answer

    audit_log: str | None
    if plain is not None:
        config = plain["config"]
        on_error, audit_log = config["on_error"], config["audit_log"]
        host = config["host_name"] or (plain["host"] or {}).get("name") or nodename
    elif (readable := readable_config(options.config)) is not None:
        on_error, audit_log = readable.on_error, str(readable.audit_log)
        host = readable.host_name or nodename
    else:
        from cpuguard.config import DEFAULT_ON_ERROR

        on_error = dict(DEFAULT_ON_ERROR)
        if options.on_error_exit is not None:
            on_error[operation] = "block" if options.on_error_exit else "allow"
        audit_log = fallback_audit_log(options)
        host = nodename
    event = Event(vm, operation, libvirt_call)
    result = error_result(event, describe(exc), on_error=on_error, host=host, now=now(), config_path=options.config)
    return Answer(result.exit_code, result.message, result.record), audit_log


def fallback_audit_log(options: Options) -> str | None:
    """Where to log when the configuration cannot be read: what the shim passes (``--audit-log``);
    cpuguard's default log only for the default configuration; else nowhere (another configuration
    may well name another log, and a test run must not land in the system's)."""
    if options.audit_log is not None:
        return options.audit_log
    if options.config == DEFAULT_CONFIG:
        from cpuguard.config import Config

        return str(Config(None).audit_log)
    return None


def readable_config(path: str) -> Any:
    """The configuration when the file itself is fine (and something it names is not); else None."""
    from pathlib import Path

    from cpuguard.config import read_config

    try:
        return read_config(Path(path))
    except Exception:
        return None


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: IO[bytes] | None = None,
    stderr: IO[str] | None = None,
    nodename: str | None = None,
    now: Callable[[], datetime] | None = None,
    started: float | None = None,
    proc_stat: str = "/proc/stat",
) -> int:
    """Run one hook call; returns the exit code (1 blocks the operation).

    ``started`` is when the hook process started (``time.monotonic()``; default: now): the deadline
    counts from there.
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
    if now is None:
        from datetime import UTC, datetime

        def now() -> datetime:
            return datetime.now(UTC)

    domain_xml = (stdin or sys.stdin.buffer).read()
    answer, audit_log = decide(
        vm,
        operation,
        f"{libvirt_op} {sub_op}",
        domain_xml,
        options,
        nodename=nodename or os.uname().nodename,
        now=now,
        started=started,
        proc_stat=proc_stat,
    )
    from cpuguard.hook.journal import deliver, json_line, syslog_error

    answer.record.update(
        pid=os.getpid(),
        caller=parent_name(),
        decided_in="hook",
        elapsed_ms=round((time.monotonic() - started) * 1000, 1),
    )
    deliver(audit_log, json_line(answer.record), answer.message, vm=vm, operation=operation, err=err)
    if answer.record.get("verdict") == "error":
        syslog_error(answer.message)
    return answer.exit_code
