"""What a hook decision reads of a domain XML document, without an XML library, or None.

:func:`cpuguard.domain.parse_domain` reads the root element's ``type``, the
text of ``<name>``, ``arch`` of ``<os><type>`` and the ``<cpu>`` element
(its ``mode``, the text of ``<model>`` and ``<vendor>``, ``name`` and
``policy`` of each ``<feature>``), each a child of the root. Importing an
XML parser costs the hook more than its whole decision (docs/hook.md,
"Speed"), so :func:`read_guest` reads those parts itself -- but only from
documents it can vouch for, and says None (the full parser decides) for
anything else. It accepts a strict subset of well-formed XML:

* UTF-8 without a byte-order mark or an XML declaration, no NUL, CR or other
  character XML forbids or normalises, at most cpuguard's 8 MiB;
* no ``<!`` (DTD, entity declaration, comment, CDATA) and no ``<?``, no ``]]>``;
  ``&`` only in ``&lt;``, ``&gt;``, ``&amp;``, ``&quot;`` and ``&apos;``;
* one root element ``<domain>`` and nothing but whitespace around it; every
  start tag with ASCII names, quoted attribute values without ``<``,
  whitespace between attributes, no attribute twice (nor a local name twice
  where a prefix is involved); every end tag closing the element last opened;
* every namespace prefix declared on the element or an ancestor, none
  declared empty, ``xml`` and ``xmlns`` never declared, no default namespace;
* at most one ``<name>``, ``<os>`` and ``<cpu>`` child of the root, one
  ``<type>`` in that ``<os>``, one ``<model>`` and one ``<vendor>`` in that
  ``<cpu>``, and a name on every ``<feature>`` there.

tests/hook/test_hook_domainxml.py checks that whatever this reads, cpuguard's
parser reads too, and the same.
"""

from __future__ import annotations

#: cpuguard.xmlsafe.MAX_XML_BYTES (not imported: that module loads the XML parser; a test keeps them equal)
MAX_XML_BYTES = 8 * 1024 * 1024

_WHITESPACE = b" \t\n"
_NAME_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME = _NAME_START | frozenset(b"0123456789-.:")
_ENTITIES = ((b"&lt;", b"<"), (b"&gt;", b">"), (b"&quot;", b'"'), (b"&apos;", b"'"), (b"&amp;", b"&"))
#: C0 controls other than tab and LF (CR: XML normalises line ends), and U+FFFE, U+FFFF.
_NOT_XML = (*(bytes([c]) for c in range(32) if c not in (9, 10)), b"\xef\xbf\xbe", b"\xef\xbf\xbf")
#: Elements read, by their parent's path (b"" the root), each at most once except <feature>.
_READ = {b"": (b"name", b"os", b"cpu"), b"os": (b"type",), b"cpu": (b"model", b"vendor", b"feature")}


class Guest:
    """The parts of a domain document a decision reads, as written (names not yet canonical)."""

    def __init__(self, virt_type: str, name: str, arch: str, cpu: GuestCpuXml | None) -> None:
        self.virt_type = virt_type
        self.name = name
        self.arch = arch
        self.cpu = cpu  # None: no <cpu> element


class GuestCpuXml:
    def __init__(self, mode: str, model: str, vendor: str, features: list[tuple[str, str]]) -> None:
        self.mode = mode
        self.model = model  # "" when absent
        self.vendor = vendor  # "" when absent
        self.features = features  # (name, policy) in document order


class _Refused(Exception):
    """The document is outside what this module vouches for."""


class _Element:
    def __init__(self, attributes: dict[str, str]) -> None:
        self.attributes = attributes
        self.text = b""  # before the first child, as ElementTree's .text
        self.children = 0


def read_guest(data: bytes) -> Guest | None:
    """The guest as :func:`cpuguard.domain.parse_domain` reads it, or None when it must look itself."""
    if len(data) > MAX_XML_BYTES or b"<!" in data or b"<?" in data or b"]]>" in data:
        return None
    if any(bad in data for bad in _NOT_XML):
        return None
    if data.count(b"&") != sum(data.count(entity) for entity, _ in _ENTITIES):
        return None
    try:
        data.decode("utf-8")
        return _Scanner(data).guest()
    except (UnicodeDecodeError, _Refused):
        return None


def _text(raw: bytes) -> str:
    for entity, char in _ENTITIES:  # &amp; last: "&amp;lt;" is "&lt;"
        raw = raw.replace(entity, char)
    return raw.decode("utf-8")


def _skip_space(data: bytes, i: int) -> int:
    while i < len(data) and data[i] in _WHITESPACE:
        i += 1
    return i


def _name(data: bytes, i: int) -> int:
    """The end of the XML name starting at ``i``."""
    if i >= len(data) or data[i] not in _NAME_START:
        raise _Refused
    j = i + 1
    while j < len(data) and data[j] in _NAME:
        j += 1
    _, colon, local = data[i:j].partition(b":")
    if colon and (b":" in local or not local or local[0] not in _NAME_START):
        raise _Refused  # with namespaces, both parts are names of their own (NCName)
    return j


class _Scanner:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read: dict[bytes, list[_Element]] = {}  # by path: b"", b"name", b"os/type", b"cpu/feature"...

    def guest(self) -> Guest:
        data = self.data
        # (name, path if read, prefixes in scope)
        stack: list[tuple[bytes, bytes | None, frozenset[bytes]]] = []
        pos = _skip_space(data, 0)
        seen_root = False
        while True:
            lt = data.find(b"<", pos)
            text = data[pos:] if lt < 0 else data[pos:lt]
            if not stack and text.strip(_WHITESPACE):
                raise _Refused  # text outside the root element
            if stack and stack[-1][1] is not None:
                element = self.read[stack[-1][1]][-1]
                if not element.children:
                    element.text += text
            if lt < 0:
                break
            if data[lt + 1 : lt + 2] == b"/":
                gt = data.find(b">", lt)
                if gt < 0 or not stack or data[lt + 2 : gt].rstrip(_WHITESPACE) != stack[-1][0]:
                    raise _Refused
                stack.pop()
                pos = gt + 1
                continue
            if seen_root and not stack:
                raise _Refused  # a second root element
            seen_root = True
            pos = self._start_tag(lt, stack)
        if stack or not seen_root:
            raise _Refused
        return self._guest()

    def _guest(self) -> Guest:
        def one(path: bytes) -> _Element | None:
            found = self.read.get(path, [])
            if len(found) > 1 and path != b"cpu/feature":
                raise _Refused  # parse_domain would take the first, or refuse: the full parser decides
            return found[0] if found else None

        root = one(b"")
        name = one(b"name")
        one(b"os")
        os_type = one(b"os/type")
        cpu = one(b"cpu")
        if root is None:
            raise _Refused
        arch = (os_type.attributes.get("arch") if os_type is not None else None) or "x86_64"
        guest_name = _text(name.text).strip() if name is not None else ""
        if cpu is None:
            return Guest(root.attributes.get("type", ""), guest_name, arch, None)
        model, vendor = one(b"cpu/model"), one(b"cpu/vendor")
        features = []
        for feature in self.read.get(b"cpu/feature", []):
            fname = feature.attributes.get("name")
            if not fname:
                raise _Refused
            features.append((fname, feature.attributes.get("policy", "require")))
        guest_cpu = GuestCpuXml(
            cpu.attributes.get("mode", "custom"),
            _text(model.text).strip() if model is not None else "",
            _text(vendor.text).strip() if vendor is not None else "",
            features,
        )
        return Guest(root.attributes.get("type", ""), guest_name, arch, guest_cpu)

    def _start_tag(self, lt: int, stack: list[tuple[bytes, bytes | None, frozenset[bytes]]]) -> int:
        data = self.data
        end = _name(data, lt + 1)
        name = data[lt + 1 : end]
        attributes: list[bytes] = []
        values: dict[str, str] = {}
        declared: set[bytes] = set()
        i = end
        while True:
            j = _skip_space(data, i)
            if data[j : j + 1] == b">":
                empty, after = False, j + 1
                break
            if data[j : j + 2] == b"/>":
                empty, after = True, j + 2
                break
            if j == i:
                raise _Refused  # no whitespace before an attribute
            k = _name(data, j)
            attribute = data[j:k]
            k = _skip_space(data, k)
            if data[k : k + 1] != b"=":
                raise _Refused
            k = _skip_space(data, k + 1)
            quote = data[k : k + 1]
            if quote not in (b'"', b"'"):
                raise _Refused
            close = data.find(quote, k + 1)
            if close < 0 or b"<" in data[k + 1 : close]:
                raise _Refused
            if attribute == b"xmlns":
                raise _Refused  # a default namespace changes what every unprefixed name means
            if attribute.startswith(b"xmlns:"):
                prefix = attribute[6:]
                if prefix in (b"xml", b"xmlns") or close == k + 1:
                    raise _Refused
                declared.add(prefix)
            attributes.append(attribute)
            # attribute-value normalisation (XML 1.0 section 3.3.3): a literal tab or line end is a space
            values[attribute.decode()] = _text(data[k + 1 : close].replace(b"\t", b" ").replace(b"\n", b" "))
            i = close + 1
        scope = (stack[-1][2] if stack else frozenset({b"xml"})) | declared
        self._check_names(name, attributes, scope)
        path = self._path(name, stack)
        if path is not None:
            self.read.setdefault(path, []).append(_Element(values))
        if stack and stack[-1][1] is not None:
            self.read[stack[-1][1]][-1].children += 1
        if not empty:
            stack.append((name, path, scope))
        return after

    @staticmethod
    def _path(name: bytes, stack: list[tuple[bytes, bytes | None, frozenset[bytes]]]) -> bytes | None:
        """Where this element is read (its path from the root), if it is."""
        if not stack:
            if name != b"domain":
                raise _Refused  # parse_domain refuses another root
            return b""
        parent = stack[-1][1]
        if len(stack) > 2 or parent is None or name not in _READ.get(parent, ()):
            return None
        return parent + b"/" + name if parent else name

    @staticmethod
    def _check_names(name: bytes, attributes: list[bytes], scope: frozenset[bytes]) -> None:
        prefix, colon, _ = name.partition(b":")
        if colon and (prefix == b"xmlns" or prefix not in scope):
            raise _Refused  # an unbound prefix is an error in namespace-aware parsing
        if len(set(attributes)) != len(attributes):
            raise _Refused
        locals_seen: dict[bytes, bool] = {}
        for attribute in attributes:
            prefix, colon, local = attribute.partition(b":")
            if not colon:
                prefix, local = b"", attribute
            if prefix == b"xmlns" or attribute == b"xmlns":
                continue
            if prefix and prefix not in scope:
                raise _Refused
            if local in locals_seen and (prefix or locals_seen[local]):
                raise _Refused  # two prefixes may name one namespace: a duplicate to the parser
            locals_seen[local] = locals_seen.get(local, False) or bool(prefix)
