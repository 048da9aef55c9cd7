"""Every reader against the hostile catalog, every truncation of every real sample, NUL
bytes and re-encodings: each input is refused with one line naming the file, or read
exactly as the intact file is -- never a traceback, a hang or a silently different answer.

All in-process (a few thousand reads a second); a sample of cases also goes through
``python -m cpuguard`` to check the exit code and the single stderr line end to end.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cpuguard.cli import main
from tests.conftest import run_cpuguard
from tests.hostile.catalog import CATALOG, Case
from tests.hostile.readers import READERS, Reader, samples
from tests.hostile.tally import VALID_PREFIXES, tried

#: A refusal of one catalog input may take this long at most (the hook's default deadline is 5 s).
CASE_SECONDS = 3.0


def assert_one_line(exc: BaseException, path: Path, reader: Reader) -> None:
    text = str(exc)
    assert "\n" not in text and "\r" not in text, text
    assert text.strip(), "an empty message"
    assert isinstance(exc, reader.errors), f"{type(exc).__name__} is not one of the reader's refusals"
    if reader.name != "elf":
        assert text.startswith(f"{path}: "), f"the message does not name the file: {text[:200]}"


CASES = [(reader, case) for reader, cases in CATALOG.items() for case in cases]


@pytest.mark.parametrize(("reader_name", "case"), CASES, ids=[f"{r}-{c.name}" for r, c in CASES])
def test_catalog_input_is_refused_in_one_line(reader_name: str, case: Case, tmp_path: Path) -> None:
    reader = READERS[reader_name]
    started = time.monotonic()
    with pytest.raises(reader.errors) as info:
        reader.read(case.data, tmp_path)
    elapsed = time.monotonic() - started
    assert_one_line(info.value, reader.path_in(tmp_path), reader)
    assert case.problem in str(info.value)
    assert len(str(info.value)) < 2000 or case.name.startswith("huge"), "a refusal should not echo the input"
    assert elapsed < CASE_SECONDS, f"took {elapsed:.1f} s"
    tried(reader_name)


SAMPLES = [(reader, label) for reader in READERS for label, _ in samples(reader)]


def test_every_reader_has_real_samples() -> None:
    for reader in READERS:
        assert samples(reader), f"no sample for {reader}"


def _same_or_refused(reader: Reader, data: bytes, directory: Path, label: str, full: object) -> bool:
    """Read ``data``: True when it was refused properly, False when it read the same as ``full``."""
    try:
        result = reader.read(data, directory, label)
    except reader.errors as exc:
        assert_one_line(exc, reader.path_in(directory, label), reader)
        return True
    assert result == full, "a damaged file was read as a different, valid one"
    return False


@pytest.mark.parametrize(("reader_name", "label"), SAMPLES, ids=[f"{r}-{s}" for r, s in SAMPLES])
def test_every_truncation_is_refused_or_harmless(reader_name: str, label: str, scratch: Path) -> None:
    """Cut a real sample at every byte boundary (a copy interrupted, a disk full mid-write).

    XML and JSON end with their root's closing mark and cpuinfo's facts end with a complete
    flags line, so a cut is refused or (only trailing lines lost) reads the same. YAML has no
    end marker: a policy cut after a complete line is a valid, shorter policy -- counted and
    printed, and the reason snapshots and policies must be written atomically (docs/security.md).
    """
    reader = READERS[reader_name]
    data = dict(samples(reader_name))[label]
    full = reader.read(data, scratch, label)
    valid = 0
    for cut in range(len(data)):
        prefix = data[:cut]
        if reader.prefix_safe:
            try:
                refused = _same_or_refused(reader, prefix, scratch, label, full)
            except AssertionError as exc:
                raise AssertionError(f"cut at byte {cut}: {exc}") from None
            if not refused and reader_name != "cpuinfo":
                assert not data[cut:].strip(), f"cut at byte {cut} was read as a whole file"
        else:
            try:
                reader.read(prefix, scratch, label)
                valid += 1
            except reader.errors as exc:
                assert_one_line(exc, reader.path_in(scratch, label), reader)
    tried(reader_name, len(data))
    VALID_PREFIXES[reader_name] += valid


@pytest.mark.parametrize(("reader_name", "label"), SAMPLES, ids=[f"{r}-{s}" for r, s in SAMPLES])
def test_nul_and_invalid_bytes_are_refused(reader_name: str, label: str, scratch: Path) -> None:
    reader = READERS[reader_name]
    data = dict(samples(reader_name))[label]
    positions = sorted({0, len(data) // 2, len(data) - 1, *range(0, len(data), max(1, len(data) // 40))})
    count = 0
    for at in positions:
        for bad in (b"\0", b"\xff", b"\xc3\x28", b"\xed\xa0\x80"):  # NUL, invalid, bad sequence, surrogate
            damaged = data[:at] + bad + data[at:]
            with pytest.raises(reader.errors) as info:
                reader.read(damaged, scratch, label)
            assert_one_line(info.value, reader.path_in(scratch, label), reader)
            count += 1
    tried(reader_name, count)


def _reencodings(data: bytes) -> dict[str, bytes]:
    text = data.decode("utf-8")
    return {
        "utf-8 with BOM": b"\xef\xbb\xbf" + data,
        "utf-16": text.encode("utf-16"),
        "utf-16-be without BOM": text.encode("utf-16-be"),
        "utf-32": text.encode("utf-32"),
        "CRLF line ends": text.replace("\n", "\r\n").encode(),
        "CR line ends": text.replace("\n", "\r").encode(),
        "latin-1 declared": text.encode("latin-1", "replace"),
    }


@pytest.mark.parametrize(("reader_name", "label"), SAMPLES, ids=[f"{r}-{s}" for r, s in SAMPLES])
def test_other_encodings_are_refused_or_read_the_same(reader_name: str, label: str, scratch: Path) -> None:
    reader = READERS[reader_name]
    data = dict(samples(reader_name))[label]
    full = reader.read(data, scratch, label)
    for encoded in _reencodings(data).values():
        _same_or_refused(reader, encoded, scratch, label, full)
    tried(reader_name, len(_reencodings(data)))


# -- through the command line ---------------------------------------------------------------


def _argv(reader_name: str, tmp_path: Path) -> list[str] | None:
    """The command that makes cpuguard read the input written for ``reader_name`` in tmp_path."""
    path = READERS[reader_name].path_in(tmp_path)
    policies = ["--policies", str(tmp_path)]
    if reader_name == "domain-xml":
        return ["check", "vm", str(path), "host", "model:Westmere", *policies]
    if reader_name in ("capabilities-xml", "domcapabilities-xml", "cpuinfo", "snapshot-json"):
        return ["host", "show", str(path), *policies]
    if reader_name in ("policy-yaml", "guest-scan-json"):
        return ["check", "vm", "pbx01", "host", "model:Westmere", *policies]
    if reader_name == "inventory-yaml":
        return ["host", "show", "model:Westmere", *policies]
    return None  # config: read by the hook (cpuguard/hook), not by these commands


CLI_CASES = [(r, c) for r, c in CASES if r != "config-yaml"]


@pytest.mark.parametrize(("reader_name", "case"), CLI_CASES, ids=[f"{r}-{c.name}" for r, c in CLI_CASES])
def test_catalog_input_through_the_cli_exits_2(
    reader_name: str, case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reader = READERS[reader_name]
    path = reader.path_in(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(case.data)
    argv = _argv(reader_name, tmp_path)
    assert argv is not None
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""
    assert len(err.splitlines()) == 1, err[:2000]
    assert err.startswith(f"cpuguard: error: {path}: ")
    tried(reader_name)


#: One input per reader end to end in a subprocess: exit code, one stderr line, no traceback.
SUBPROCESS_CASES = {
    "domain-xml": "billion laughs",
    "capabilities-xml": "external entity",
    "domcapabilities-xml": "two host-models",
    "cpuinfo": "cut in the flags line",
    "snapshot-json": "deep nesting",
    "policy-yaml": "python object tag",
    "inventory-yaml": "billion laughs",
}


@pytest.mark.parametrize("reader_name", sorted(SUBPROCESS_CASES))
def test_hostile_input_end_to_end(reader_name: str, tmp_path: Path) -> None:
    case = next(c for c in CATALOG[reader_name] if c.name == SUBPROCESS_CASES[reader_name])
    path = READERS[reader_name].path_in(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(case.data)
    argv = _argv(reader_name, tmp_path)
    assert argv is not None
    result = run_cpuguard(*argv, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"cpuguard: error: {path}: ")
    assert case.problem in result.stderr
    assert "Traceback" not in result.stderr
