"""What of a domain XML document a hook decision depends on, as exact text: the memo's key.

:func:`cpuguard.domain.parse_domain` reads the root element's ``type``, the
text of the first ``<name>``, ``arch`` of ``<os><type>`` and the whole
``<cpu>`` element, each a child of the root. The key is their text -- of the
root and of ``<os>`` only the name, ``type`` and the namespace declarations,
which decide what the names below mean -- and two documents with the same
key parse to the same guest, and so lead to the same decision, provided both
parse at all. (libvirt writes the running domain's ``id`` on the root, a new
one at every start: it must not be part of the key.) A document cpuguard's parser would
refuse must never find a remembered decision, so :func:`decision_key`
answers only for documents it can vouch for, and says None (the full path
decides) for anything else. It accepts a strict subset of well-formed XML:

* UTF-8 without a byte-order mark or an XML declaration, no NUL or other
  character XML forbids, at most cpuguard's 8 MiB;
* no ``<!`` (DTD, entity declaration, comment, CDATA) and no ``<?``, no ``]]>``;
  ``&`` only in ``&lt;``, ``&gt;``, ``&amp;``, ``&quot;`` and ``&apos;``;
* one root element and nothing but whitespace around it; every start tag
  with ASCII names, quoted attribute values without ``<``, whitespace between
  attributes, no attribute twice (nor a local name twice where a prefix is
  involved); every end tag closing the element last opened;
* every namespace prefix declared on the element or an ancestor, none
  declared empty, ``xml`` and ``xmlns`` never declared;
* at most one ``<name>``, ``<os>`` and ``<cpu>`` child of the root, and at
  most one ``<type>`` in that ``<os>``.

Nothing here parses for a decision: cpuguard.xmlsafe does, on a miss.
"""

from __future__ import annotations

#: cpuguard.xmlsafe.MAX_XML_BYTES (not imported: that module loads the XML parser; a test keeps them equal)
MAX_XML_BYTES = 8 * 1024 * 1024

_WHITESPACE = b" \t\r\n"
_NAME_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME = _NAME_START | frozenset(b"0123456789-.:")
_ENTITIES = (b"&lt;", b"&gt;", b"&amp;", b"&quot;", b"&apos;")
#: C0 controls other than tab, LF and CR, and U+FFFE, U+FFFF: not characters in XML 1.0.
_NOT_XML = (*(bytes([c]) for c in range(32) if c not in (9, 10, 13)), b"\xef\xbf\xbe", b"\xef\xbf\xbf")
#: The root's children the decision reads (parse_domain), and the <os> child.
_WATCHED = (b"name", b"os", b"cpu")


class _Refused(Exception):
    """The document is outside what this module vouches for."""


def decision_key(data: bytes) -> bytes | None:
    """The exact text parse_domain's result depends on, or None when the full parser must look."""
    if len(data) > MAX_XML_BYTES or b"<!" in data or b"<?" in data or b"]]>" in data:
        return None
    if any(bad in data for bad in _NOT_XML):
        return None
    if data.count(b"&") != sum(data.count(entity) for entity in _ENTITIES):
        return None
    try:
        data.decode("utf-8")
        return _Scanner(data).key()
    except (UnicodeDecodeError, _Refused):
        return None


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
        self.spans: dict[str, bytes] = {}
        self.counts: dict[bytes, int] = {}

    def key(self) -> bytes:
        data = self.data
        # (name, start offset, part of the key it is, prefixes in scope)
        stack: list[tuple[bytes, int, str | None, frozenset[bytes]]] = []
        pos = _skip_space(data, 0)
        seen_root = False
        while True:
            lt = data.find(b"<", pos)
            text = data[pos:] if lt < 0 else data[pos:lt]
            if not stack and text.strip(_WHITESPACE):
                raise _Refused  # text outside the root element
            if lt < 0:
                break
            if data[lt + 1 : lt + 2] == b"/":
                gt = data.find(b">", lt)
                if gt < 0 or not stack or data[lt + 2 : gt].rstrip(_WHITESPACE) != stack[-1][0]:
                    raise _Refused
                _, start, part, _ = stack.pop()
                if part:
                    self.spans[part] = data[start : gt + 1]
                pos = gt + 1
                continue
            if seen_root and not stack:
                raise _Refused  # a second root element
            seen_root = True
            pos = self._start_tag(lt, stack)
        if stack or not seen_root:
            raise _Refused
        parts = ("root", "name", "os", "type", "cpu")
        return b"\0".join(self.spans.get(part, b"") for part in parts)

    def _start_tag(self, lt: int, stack: list[tuple[bytes, int, str | None, frozenset[bytes]]]) -> int:
        data = self.data
        end = _name(data, lt + 1)
        name = data[lt + 1 : end]
        attributes: list[bytes] = []
        decisive = [name]  # the name, the namespace declarations, and type (read on the root)
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
            if attribute.startswith(b"xmlns:"):
                prefix = attribute[6:]
                if prefix in (b"xml", b"xmlns") or close == k + 1:
                    raise _Refused
                declared.add(prefix)
            attributes.append(attribute)
            if attribute == b"type" or attribute == b"xmlns" or attribute.startswith(b"xmlns:"):
                decisive.append(data[j : close + 1])
            i = close + 1
        scope = (stack[-1][3] if stack else frozenset({b"xml"})) | declared
        self._check_names(name, attributes, scope)
        part = self._part(name, stack)
        if part == "root":
            # not all of its start tag: libvirt writes the domain's id there, another at every start
            self.spans["root"] = b" ".join(decisive)
            part = None
        elif part == "os":
            self.spans["os"] = b" ".join(decisive[:1] + [d for d in decisive[1:] if d.startswith(b"xmlns")])
            part = None if empty else "os-element"
        if empty:
            if part:
                self.spans[part] = data[lt:after]
        else:
            stack.append((name, lt, part if part != "os-element" else None, scope))
        return after

    def _part(self, name: bytes, stack: list[tuple[bytes, int, str | None, frozenset[bytes]]]) -> str | None:
        """Which part of the key this element is (its text goes into the key), if any."""
        depth = len(stack)
        if depth == 0:
            return "root"
        if depth == 1 and name in _WATCHED:
            count = self.counts[name] = self.counts.get(name, 0) + 1
            if count > 1:
                raise _Refused  # parse_domain would take the first, or refuse: the full parser decides
            return name.decode()
        if depth == 2 and name == b"type" and stack[1][0] == b"os":
            count = self.counts[b"os/type"] = self.counts.get(b"os/type", 0) + 1
            if count > 1:
                raise _Refused
            return "type"
        return None

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
