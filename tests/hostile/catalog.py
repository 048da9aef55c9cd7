"""The hostile input catalog: per reader, inputs crafted to crash, hang or fool it.

Each :class:`Case` is one input and a fragment of the one-line refusal it must
get. docs/security.md describes the classes of attack; the generic ones
(truncation at every byte, NUL bytes, re-encodings) are generated from the real
samples in test_hostile_inputs.py instead of being listed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cpuguard.hosts.cpuinfo import MAX_CPUINFO_BYTES
from cpuguard.hosts.snapshot import MAX_SNAPSHOT_BYTES
from cpuguard.xmlsafe import MAX_XML_BYTES
from cpuguard.yamlsafe import MAX_YAML_BYTES


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    problem: str  # a fragment of the refusal's text (after "<file>: ")


def _xml_attacks(root: str) -> list[Case]:
    """Attacks on any XML reader, with ``root`` as the expected root element."""
    laughs = "<!ENTITY l0 'lol'>" + "".join(f"<!ENTITY l{i} '{('&l' + str(i - 1) + ';') * 10}'>" for i in range(1, 10))
    deep = f"<{root}>" + "<a>" * 100_000 + "</a>" * 100_000 + f"</{root}>"
    return [
        Case("billion laughs", f"<?xml version='1.0'?><!DOCTYPE {root} [{laughs}]><{root}>&l9;</{root}>".encode(),
             "refusing XML with DTD or entity declarations"),
        Case("external entity", f"<!DOCTYPE {root} [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><{root}>&x;</{root}>"
             .encode(), "refusing XML with DTD or entity declarations"),
        Case("parameter entity", f"<!DOCTYPE {root} [<!ENTITY % p SYSTEM 'http://127.0.0.1:9/x.dtd'> %p;]>"
             f"<{root}/>".encode(), "refusing XML with DTD or entity declarations"),
        Case("external DTD", f"<!DOCTYPE {root} SYSTEM 'http://127.0.0.1:9/x.dtd'><{root}/>".encode(),
             "refusing XML with DTD or entity declarations"),
        Case("doctype only", f"<!DOCTYPE {root}><{root}/>".encode(), "refusing XML with DTD or entity declarations"),
        Case("undefined entity", f"<{root}>&nbsp;</{root}>".encode(), "malformed XML: undefined entity"),
        Case("deep nesting", deep.encode(), ""),  # the reader's own complaint, whatever element it misses
        Case("over the size cap", f"<{root}>".encode() + b" " * MAX_XML_BYTES + f"</{root}>".encode(),
             "larger than"),
        Case("empty", b"", "empty"),
        Case("whitespace only", b"  \n\t\n", "empty"),
        Case("NUL byte", f"<{root}>\0</{root}>".encode(), "malformed XML"),
        Case("invalid UTF-8", f"<{root} a='\xff'/>".encode("latin-1"), "malformed XML: not well-formed"),
        Case("lying encoding declaration", f"<?xml version='1.0' encoding='utf-16'?><{root}/>".encode(),
             "malformed XML"),
        Case("unknown encoding", f"<?xml version='1.0' encoding='x-klingon'?><{root}/>".encode(),
             "malformed XML"),
        Case("two roots", f"<{root}/><{root}/>".encode(), "malformed XML: junk after document element"),
        Case("unclosed", f"<{root}><cpu>".encode(), "malformed XML: no element found"),
        Case("wrong root", b"<html><body/></html>", "as the root element, found <html>"),
        Case("json instead", b'{"cpuguard_snapshot": 1}', ""),
        Case("binary garbage", bytes(range(256)) * 4, ""),
    ]


_DOMAIN = "<domain type='kvm'><name>pbx01</name><os><type arch='x86_64'>hvm</type></os>{cpu}</domain>"


def _domain(cpu: str) -> bytes:
    return _DOMAIN.format(cpu=cpu).encode()


DOMAIN_XML = [
    *(c for c in _xml_attacks("domain") if c.name not in ("deep nesting",)),
    Case("deep nesting", b"<domain>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</domain>", "has no <name>"),
    Case("no name", b"<domain type='kvm'><cpu mode='host-model'/></domain>", "domain XML has no <name>"),
    # an unknown name of libvirt's shape is XML from a newer libvirt: decided, not refused
    Case("model name no libvirt writes", _domain("<cpu mode='custom'><model>West mere</model></cpu>"),
         "unknown libvirt CPU model 'West mere'"),
    Case("feature name no libvirt writes", _domain("<cpu mode='host-model'><feature name='avx/9000'/></cpu>"),
         "unknown CPU feature 'avx/9000'"),
    Case("feature without name", _domain("<cpu mode='host-model'><feature policy='require'/></cpu>"),
         "<cpu><feature> without a name"),
    Case("bad feature policy", _domain("<cpu mode='custom'><model>Westmere</model>"
                                       "<feature policy='sometimes' name='avx2'/></cpu>"),
         "unknown feature policy 'sometimes' for avx2"),
    Case("bad mode", _domain("<cpu mode='host-copy'/>"), "unknown <cpu mode='host-copy'>"),
    Case("newline in attribute", _domain("<cpu mode='host\nmodel'/>"), "unknown <cpu mode="),
    Case("huge feature name", _domain(f"<cpu mode='host-model'><feature name='{'x' * 100_000}'/></cpu>"),
         "unknown CPU feature"),
    Case("two cpu elements", _domain("<cpu mode='host-passthrough'/><cpu mode='custom'><model>qemu64</model></cpu>"),
         "more than one <cpu> element"),
    Case("two models", _domain("<cpu mode='custom'><model>Skylake-Server</model><model>qemu64</model></cpu>"),
         "more than one <model> in <cpu>"),
]

_CAPS = "<capabilities><host><cpu><arch>x86_64</arch>{inner}</cpu></host></capabilities>"

CAPABILITIES_XML = [
    *(c for c in _xml_attacks("capabilities") if c.name not in ("wrong root", "json instead", "binary garbage")),
    Case("wrong root", b"<domain/>", "not a libvirt capabilities or domcapabilities document: root element <domain>"),
    Case("no host cpu", b"<capabilities><host/></capabilities>", "no <host><cpu> element in capabilities XML"),
    Case("no arch", b"<capabilities><host><cpu><model>Westmere</model></cpu></host></capabilities>",
         "no <arch> in <host><cpu>"),
    Case("feature without name", _CAPS.format(inner="<model>Westmere</model><feature/>").encode(),
         "<feature> without a name"),
    Case("two models", _CAPS.format(inner="<model>Westmere</model><model>Skylake-Server</model>").encode(),
         "more than one <model> in <host><cpu>"),
]

_DOMCAPS = "<domainCapabilities><arch>x86_64</arch><cpu>{modes}</cpu></domainCapabilities>"

DOMCAPABILITIES_XML = [
    *(c for c in _xml_attacks("domainCapabilities") if c.name not in ("wrong root", "json instead", "binary garbage")),
    Case("no arch", b"<domainCapabilities><cpu/></domainCapabilities>", "no <arch> in domain capabilities"),
    Case("no host-model", _DOMCAPS.format(modes="<mode name='host-passthrough' supported='yes'/>").encode(),
         "no supported host-model CPU mode"),
    Case("host-model unsupported", _DOMCAPS.format(modes="<mode name='host-model' supported='no'/>").encode(),
         "no supported host-model CPU mode"),
    Case("two host-models", _DOMCAPS.format(
        modes="<mode name='host-model' supported='yes'><model>Westmere</model></mode>"
              "<mode name='host-model' supported='yes'><model>Skylake-Server</model></mode>").encode(),
         "more than one host-model CPU mode"),
]

_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 lm"

CPUINFO = [
    Case("empty", b"", "empty file"),
    Case("whitespace only", b"\n\n  \n", "empty file"),
    Case("NUL byte", f"processor\t: 0\nflags\t\t: {_FLAGS}\0\n".encode(), "contains NUL bytes"),
    Case("invalid UTF-8", b"processor\t: 0\nmodel name\t: \xff\xfe\nflags\t\t: fpu\n", "not UTF-8 text"),
    Case("UTF-16", f"processor\t: 0\nflags\t\t: {_FLAGS}\n".encode("utf-16"), "not UTF-8 text"),
    Case("no processor", f"flags\t\t: {_FLAGS}\n".encode(), "no 'processor' entries"),
    Case("no flags", b"processor\t: 0\nvendor_id\t: GenuineIntel\n", "neither 'flags' nor 'Features' found"),
    Case("empty flags", b"processor\t: 0\nflags\t\t:\n", "empty 'flags' line"),
    Case("one cpu without flags", f"processor\t: 0\nflags\t\t: {_FLAGS}\n\nprocessor\t: 1\n\n".encode(),
         "empty 'flags' line"),
    Case("cut in the flags line", f"processor\t: 0\nflags\t\t: {_FLAGS[:40]}".encode(),
         "ends in the middle of a 'flags' line"),
    Case("over the size cap", b"processor\t: 0\n" + b"x" * MAX_CPUINFO_BYTES, "larger than"),
    Case("binary garbage", bytes(range(1, 256)) * 4, "not UTF-8 text"),
    Case("a YAML file", b"vm: pbx01\nrequires: {features: [avx2]}\n", "no 'processor' entries"),
]


def _snap(body: str) -> bytes:
    return ("{" + body + "}").encode()


_SNAP_OK = '"cpuguard_snapshot": 1, "arch": "x86_64", "flags": ["avx2"]'

SNAPSHOT_JSON = [
    # host_from_file takes what does not start with "{" or "<" for a /proc/cpuinfo copy
    Case("not an object", b"[1, 2, 3]", "not a /proc/cpuinfo copy: no 'processor' entries"),
    Case("null", b"null\n", "not a /proc/cpuinfo copy: no 'processor' entries"),
    Case("unterminated", b'{"cpuguard_snapshot": 1, "arch": "x86', "not valid JSON"),
    Case("missing flags", _snap('"cpuguard_snapshot": 1, "arch": "x86_64"'), "missing key 'flags'"),
    Case("future format", _snap('"cpuguard_snapshot": 2, "arch": "x86_64", "flags": []'),
         "unsupported snapshot format 2"),
    Case("format true", _snap('"cpuguard_snapshot": true, "arch": "x86_64", "flags": []'),
         "unsupported snapshot format True"),
    Case("flags a string", _snap('"cpuguard_snapshot": 1, "arch": "x86_64", "flags": "avx2"'),
         "key 'flags' must be a list of strings"),
    Case("flags with a number", _snap('"cpuguard_snapshot": 1, "arch": "x86_64", "flags": ["avx2", 7]'),
         "key 'flags' must be a list of strings"),
    Case("arch a number", _snap('"cpuguard_snapshot": 1, "arch": 64, "flags": []'), "key 'arch' must be a string"),
    Case("unknown key", _snap(_SNAP_OK + ', "colour": "red"'), "unknown key 'colour' in snapshot"),
    Case("duplicate key", _snap(_SNAP_OK + ', "flags": []'), "duplicate key 'flags'"),
    Case("bad date", _snap(_SNAP_OK + ', "captured_at": "yesterday"'), "bad captured_at 'yesterday'"),
    Case("notes not a list", _snap(_SNAP_OK + ', "notes": "x"'), "key 'notes' must be a list of strings"),
    Case("NaN", _snap('"cpuguard_snapshot": NaN, "arch": "x86_64", "flags": []'), "unsupported snapshot format"),
    Case("huge integer", _snap('"cpuguard_snapshot": ' + "9" * 5000 + ', "arch": "x86_64", "flags": []'),
         "not valid JSON"),
    Case("deep nesting", b'{"flags": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    Case("over the size cap", _snap(_SNAP_OK + ', "notes": ["' + "x" * MAX_SNAPSHOT_BYTES + '"]'),
         "snapshot is larger than"),
    Case("NUL byte", _snap(_SNAP_OK + ', "host": "a\0b"'), "not valid JSON"),
    Case("invalid UTF-8", _snap(_SNAP_OK).replace(b"avx2", b"av\xff2"), "not valid JSON"),
    Case("lone surrogate", _snap(_SNAP_OK + ', "vendor": "\\udc00"'), "a string holds a lone UTF-16 surrogate"),
]


def _yaml_attacks(valid_head: str) -> list[Case]:
    """Attacks on any YAML reader; ``valid_head`` is a valid first line of that file kind."""
    deep = "x: " + "[" * 10_000 + "]" * 10_000
    bomb = "a0: &a0 [" + ", ".join(["x"] * 10) + "]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)
    )
    return [
        Case("python object tag", f"{valid_head}\nx: !!python/object/apply:os.system ['touch /tmp/pwned']\n".encode(),
             "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
        Case("python name tag", f"{valid_head}\nx: !!python/name:os.system\n".encode(),
             "could not determine a constructor"),
        Case("custom tag", f"{valid_head}\nx: !vault |\n  abc\n".encode(), "could not determine a constructor"),
        Case("duplicate key", f"{valid_head}\n{valid_head}\n".encode(), "duplicate key"),
        Case("billion laughs", (valid_head + "\n" + bomb).encode(), "YAML aliases expand to more than"),
        Case("recursive alias", f"{valid_head}\nx: &r [*r]\n".encode(), "an alias refers to a node that contains it"),
        Case("deep nesting", f"{valid_head}\n{deep}\n".encode(), "[...] or {...} nested more than 20 deep"),
        Case("deep block nesting", f"{valid_head}\nx:\n{'- ' * 10_000}a\n".encode(), "nested too deeply"),
        Case("two documents", f"{valid_head}\n---\n{valid_head}\n".encode(), "but found another document"),
        Case("NUL byte", f"{valid_head}\0\n".encode(), "contains NUL bytes"),
        Case("invalid UTF-8", f"{valid_head}\n# \xff\n".encode("latin-1"), "not UTF-8 text"),
        Case("UTF-16", f"{valid_head}\n".encode("utf-16"), ""),
        Case("control character", f"{valid_head}\nx: a\x07b\n".encode(), "invalid YAML"),
        Case("tab indentation", f"{valid_head}\nx:\n\t- a\n".encode(), "invalid YAML"),
        Case("unclosed flow", f"{valid_head}\nx: [a, b\n".encode(), "invalid YAML"),
        Case("lone surrogate", f'{valid_head}\nx: "\\udc00"\n'.encode(), "a string holds a lone UTF-16 surrogate"),
        Case("huge integer", f"{valid_head}\nx: {'9' * 5000}\n".encode(), "invalid YAML value"),
        Case("impossible date", f"{valid_head}\nx: 2024-02-30\n".encode(), "invalid YAML value"),
        Case("unhashable key", f"{valid_head}\n? [a, b]\n: c\n".encode(), "unhashable"),
        Case("over the size cap", (valid_head + "\n#" + "x" * MAX_YAML_BYTES + "\n").encode(), "larger than"),
        Case("list at top level", b"- a\n- b\n", "expected object, got array"),
        Case("a scalar", b"just words\n", "expected object, got string"),
    ]


POLICY_YAML = [
    *(c for c in _yaml_attacks("vm: pbx01") if c.name not in ("unknown key",)),
    Case("empty", b"", "empty policy file"),
    Case("only comments", b"# nothing here\n", "empty policy file"),
    Case("unknown key", b"vm: pbx01\nrequirs: {}\n", "unknown key 'requirs'; did you mean 'requires'?"),
    Case("wrong type", b"vm: pbx01\nrequires: {features: avx2}\n", "requires.features: expected array, got string"),
    Case("vm a number", b"vm: 12\n", "vm: expected string, got integer"),
    Case("yes is not a mode", b"vm: pbx01\nmode: yes\n", "mode: True is not one of enforce, warn, off"),
    Case("name mismatch", b"vm: pbx02\n", "policy is for VM 'pbx02', expected 'pbx01'"),
    Case("name pattern", b"vm: 'pbx01; rm -rf /'\n", "does not match"),
    Case("unknown feature", b"vm: pbx01\nrequires: {features: [avx3]}\n", "unknown CPU feature 'avx3'"),
    Case("unknown level", b"vm: pbx01\nrequires: {level: x86-64-v9}\n", "x86-64-v9"),
    Case("unknown model", b"vm: pbx01\nrequires: {model: Westmire}\n", "unknown libvirt CPU model 'Westmire'"),
    Case("negative count", b"vm: pbx01\nbinaries: [{path: /a, required: [{feature: avx2, instructions: -1}]}]\n",
         "expected a count (integer >= 0), got -1"),
    Case("boolean count", b"vm: pbx01\nbinaries: [{path: /a, required: [{feature: avx2, instructions: true}]}]\n",
         "expected a count (integer >= 0), got a boolean"),
    Case("anchor under an unknown key", b"vm: pbx01\nbase: &b {vm: x}\n", "unknown key 'base'"),
    Case("date for a name", b"vm: 2024-01-01\n", "vm: expected string, got date"),
]

INVENTORY_YAML = [
    *(c for c in _yaml_attacks("description: fleet") if c.name not in ("empty",)),
    Case("unknown key", b"hosts: {}\nvm: {}\n", "unknown key 'vm'; did you mean 'vms'?"),
    Case("host not a mapping", b"hosts: {old-node: hosts/old-node.xml}\n", "hosts.old-node: expected object"),
    Case("two sources", b"hosts: {a: {facts: a.xml, uri: 'qemu:///system'}}\n",
         "hosts.a: give exactly one of facts, uri, source"),
    Case("no source", b"hosts: {a: {cluster: main}}\n", "hosts.a: give exactly one of facts, uri, source"),
    Case("vm on unknown host", b"hosts: {}\nvms: {pbx01: {host: nowhere}}\n",
         "vms.pbx01: runs on unknown host 'nowhere'"),
    Case("duplicate host", b"hosts:\n  a: {facts: a.xml}\n  a: {facts: b.xml}\n", "duplicate key 'a'"),
]

CONFIG_YAML = [
    *_yaml_attacks("mode: enforce"),
    Case("unknown key", b"polices: /etc/cpuguard/policies\n", "unknown key 'polices'; did you mean 'policies'?"),
    Case("bad on_error", b"on_error: {migrate: maybe}\n", "on_error.migrate: 'maybe' is not one of block, allow"),
    Case("unknown operation", b"on_error: {reboot: allow}\n", "on_error: unknown key 'reboot'"),
    Case("deadline too small", b"deadline_seconds: 0\n", "deadline_seconds: 0 is below 0.1"),
    Case("deadline a string", b"deadline_seconds: soon\n", "deadline_seconds: expected number, got string"),
    Case("deadline NaN", b"deadline_seconds: .nan\n", "expected a finite number"),
    Case("deadline infinite", b"deadline_seconds: .inf\n", "expected a finite number"),
    Case("check_permissions a string", b"check_permissions: 'no'\n", "expected boolean, got string"),
]

def _guest(**changes: object) -> bytes:
    base: dict[str, object] = {
        "format": "cpuguard-guest-scan/1", "vm": "pbx01", "scanned_at": "2026-12-06T10:00:00Z",
        "binaries": [], "problems": [],
    }  # fmt: skip
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v is not _DROP}).encode()


_DROP = object()

GUEST_SCAN_JSON = [
    Case("not an object", b"[1, 2]", "not a guest scan result"),
    Case("another format", _guest(format="cpuguard-guest-scan/9"), "not a guest scan result"),
    Case("a snapshot instead", b'{"cpuguard_snapshot": 1, "arch": "x86_64", "flags": []}', "not a guest scan result"),
    Case("no vm", _guest(vm=_DROP), "vm: missing or of the wrong type"),
    Case("binaries a mapping", _guest(binaries={"path": "/x"}), "binaries: missing or of the wrong type"),
    Case("bad date", _guest(scanned_at="yesterday"), "not an ISO 8601 time"),
    Case("os floor not a level", _guest(os_need={"level": "x86-64-v9"}), "x86-64-v9"),
    Case("os floor a string", _guest(os_need="v2"), "os_need: expected a mapping with a level"),
    Case("unknown feature", _guest(binaries=[{"path": "/x", "required": [{"feature": "avx3"}]}]),
         "unknown CPU feature 'avx3'"),
    Case("found_in a number", _guest(binaries=[{"path": "/x", "required": [], "found_in": 7}]),
         "binaries[0].found_in: expected a non-empty string"),
    Case("duplicate key", b'{"format": "cpuguard-guest-scan/1", "vm": "a", "vm": "b"}', "duplicate key 'vm'"),
    Case("deep nesting", b'{"binaries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    Case("lone surrogate", _guest(vm="X").replace(b'"X"', b'"\\udc00"'), "lone UTF-16 surrogate"),
    Case("invalid UTF-8", _guest().replace(b"pbx01", b"pbx\xff01"), "not valid JSON"),
]

CATALOG: dict[str, list[Case]] = {
    "domain-xml": DOMAIN_XML,
    "capabilities-xml": CAPABILITIES_XML,
    "domcapabilities-xml": DOMCAPABILITIES_XML,
    "cpuinfo": CPUINFO,
    "snapshot-json": SNAPSHOT_JSON,
    "policy-yaml": POLICY_YAML,
    "inventory-yaml": INVENTORY_YAML,
    "config-yaml": CONFIG_YAML,
    "guest-scan-json": GUEST_SCAN_JSON,
}
