"""Hardened XML parsing for everything cpuguard reads (domain XML, capabilities, cpu_map).

defusedxml refuses entity declarations, external entities and DTD tricks
(billion laughs, XXE); we add a size cap and turn every failure into a
one-line :class:`BadInput`.
"""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from cpuguard.errors import BadInput

#: Largest XML document cpuguard accepts. Real capabilities XML is ~10 KiB,
#: domcapabilities ~30 KiB, domain XML a few KiB.
MAX_XML_BYTES = 8 * 1024 * 1024


def parse_xml(text: str | bytes, where: str | Path | None, *, root: str | tuple[str, ...] = ()) -> ET.Element:
    """Parse XML safely and optionally check the root element's tag."""
    if len(text) > MAX_XML_BYTES:
        raise BadInput(where, f"XML document is larger than {MAX_XML_BYTES} bytes, refusing it")
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    if not text.strip():
        raise BadInput(where, "empty XML document")
    try:
        element: ET.Element = DET.fromstring(text, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise BadInput(where, f"refusing XML with DTD or entity declarations ({type(exc).__name__})") from None
    except ET.ParseError as exc:
        raise BadInput(where, f"malformed XML: {exc}") from None
    except (ValueError, UnicodeError, LookupError) as exc:  # LookupError: an unknown encoding= declaration
        raise BadInput(where, f"malformed XML: {exc}") from None
    roots = (root,) if isinstance(root, str) else root
    if roots and element.tag not in roots:
        expected = " or ".join(f"<{r}>" for r in roots)
        raise BadInput(where, f"expected {expected} as the root element, found <{element.tag}>")
    return element


def read_xml(path: Path, *, root: str | tuple[str, ...] = ()) -> ET.Element:
    return parse_xml(read_bytes(path, MAX_XML_BYTES), path, root=root)


def read_bytes(path: Path, limit: int) -> bytes:
    """Read a whole input file, refusing directories, devices, unreadable and oversized files.

    The file is opened non-blocking: opening a FIFO nobody writes to, or a
    terminal, would otherwise wait forever (and the libvirt hook must never
    hang). Regular files and pipes (``<(virsh capabilities)``) are read;
    other special files are refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadInput(path, "no such file") from None
    except IsADirectoryError:
        raise BadInput(path, "is a directory, expected a file") from None
    except PermissionError:
        raise BadInput(path, "permission denied") from None
    except OSError as exc:
        raise BadInput(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise BadInput(path, "is a directory, expected a file")
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise BadInput(path, "is a device or socket, expected a file")
        os.set_blocking(fd, True)  # a pipe's writer may still be writing: wait for its end of file
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise BadInput(path, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise BadInput(path, f"file is larger than {limit} bytes, refusing it")
    return data
