"""Function boundaries from ``.eh_frame``.

Stripped binaries keep their unwind tables, and every FDE names the start
and length of one function's code, so ``.eh_frame`` gives function
boundaries where ``.symtab`` is gone. Only the fields needed for that are
decoded. Format: LSB "Exception Frame"
(https://refspecs.linuxfoundation.org/LSB_5.0.0/LSB-Core-generic/LSB-Core-generic/ehframechpt.html)
and its pointer encodings (``DW_EH_PE_*``).
"""

from __future__ import annotations

import struct

_PE_OMIT = 0xFF
_PCREL_SDATA4 = 0x1B
_PCREL_PAIR = struct.Struct("<iI")
_MASK = 0xFFFFFFFFFFFFFFFF
_PE_PCREL = 0x10
_PE_DATAREL = 0x30

_FIXED = {0x00: "<Q", 0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i", 0x0C: "<q"}


class _Malformed(Exception):
    pass


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _Malformed
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _sleb(data: bytes, pos: int) -> tuple[int, int]:
    start = pos
    value, pos = _uleb(data, pos)
    bits = 7 * (pos - start)
    if value & (1 << (bits - 1)):
        value -= 1 << bits
    return value, pos


def _read(data: bytes, pos: int, encoding: int, base: int, absolute: bool) -> tuple[int, int]:
    """Read a ``DW_EH_PE`` encoded value at ``pos``; ``base`` is the section address."""
    fmt = encoding & 0x0F
    field_address = base + pos
    if fmt == 0x01:
        value, pos = _uleb(data, pos)
    elif fmt == 0x09:
        value, pos = _sleb(data, pos)
    elif fmt in _FIXED:
        code = _FIXED[fmt]
        size = struct.calcsize(code)
        if pos + size > len(data):
            raise _Malformed
        (value,) = struct.unpack_from(code, data, pos)
        pos += size
    else:
        raise _Malformed
    if absolute and encoding & 0x70 == _PE_PCREL:
        value += field_address
    return value & 0xFFFFFFFFFFFFFFFF, pos


def _cie_encoding(data: bytes, pos: int, end: int) -> int:
    """The FDE pointer encoding (augmentation 'R') of the CIE whose body starts at ``pos``."""
    version = data[pos]
    pos += 1
    aug_end = data.find(b"\0", pos, end)
    if aug_end < 0:
        raise _Malformed
    augmentation = data[pos:aug_end].decode("ascii", "replace")
    pos = aug_end + 1
    if "eh" in augmentation:
        pos += 8
    _, pos = _uleb(data, pos)  # code alignment
    _, pos = _sleb(data, pos)  # data alignment
    if version == 1:
        pos += 1
    else:
        _, pos = _uleb(data, pos)
    encoding = 0x00
    if not augmentation.startswith("z"):
        return encoding
    _, pos = _uleb(data, pos)
    for letter in augmentation[1:]:
        if letter == "R":
            return data[pos]
        if letter == "P":
            personality = data[pos]
            pos = _read(data, pos + 1, personality, 0, absolute=False)[1]
        elif letter == "L":
            pos += 1
        elif letter not in "SB":
            break
    return encoding


def function_ranges(data: bytes, address: int) -> list[tuple[int, int]]:
    """``(start, size)`` of every FDE in an ``.eh_frame`` loaded at ``address``.

    A malformed record ends the walk; what was read before it is kept.
    """
    ranges: list[tuple[int, int]] = []
    encodings: dict[int, int] = {}
    pos = 0
    size = len(data)
    try:
        while pos + 4 <= size:
            (length,) = struct.unpack_from("<I", data, pos)
            header = 4
            if length == 0:
                break
            if length == 0xFFFFFFFF:
                (length,) = struct.unpack_from("<Q", data, pos + 4)
                header = 12
            body = pos + header
            end = body + length
            if end > size or length < 4:
                break
            (cie_id,) = struct.unpack_from("<I", data, body)
            if cie_id and encodings.get(body - cie_id) == _PCREL_SDATA4 and end - body >= 12:
                # The usual case on x86-64 (GCC, Clang): one unpack per FDE.
                begin, span = _PCREL_PAIR.unpack_from(data, body + 4)
                if span:
                    ranges.append(((address + body + 4 + begin) & _MASK, span))
                pos = end
                continue
            if cie_id == 0:
                encodings[body - header] = _cie_encoding(data, body + 4, end)
            else:
                cie = body - cie_id
                encoding = encodings.get(cie)
                if encoding is None:
                    encoding = _cie_encoding_at(data, cie, encodings)
                if encoding != _PE_OMIT:
                    start, after = _read(data, body + 4, encoding, address, absolute=True)
                    length_enc = encoding & 0x0F
                    span, _ = _read(data, after, length_enc, address, absolute=False)
                    if span:
                        ranges.append((start, span))
            pos = end
    except (_Malformed, struct.error, IndexError):
        pass
    return ranges


def _cie_encoding_at(data: bytes, cie: int, cache: dict[int, int]) -> int:
    if not 0 <= cie < len(data) - 8:
        raise _Malformed
    (length,) = struct.unpack_from("<I", data, cie)
    header = 12 if length == 0xFFFFFFFF else 4
    if header == 12:
        (length,) = struct.unpack_from("<Q", data, cie + 4)
    body = cie + header
    encoding = _cie_encoding(data, body + 4, min(len(data), body + length))
    cache[cie] = encoding
    return encoding
