"""cpuguard.hook.xmlkey: the memo's key is given only for documents cpuguard's parser reads, and two
documents with one key parse to the same guest."""

from __future__ import annotations

from pathlib import Path

import pytest
from hook_helpers import DOMAINS
from hypothesis import given, settings
from hypothesis import strategies as st

from cpuguard.domain import parse_domain
from cpuguard.errors import BadInput
from cpuguard.hook.xmlkey import MAX_XML_BYTES, decision_key
from cpuguard.knowledge import load_knowledge
from cpuguard.xmlsafe import MAX_XML_BYTES as XMLSAFE_MAX
from cpuguard.xmlsafe import parse_xml

#: Shaped like what libvirt 9 hands a hook for "migrate begin": namespaces declared on the root and
#: on a metadata element, addresses, a seclabel, QEMU pass-through arguments.
LIBVIRT_LIKE = b"""<domain type='kvm' id='3' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>web01</name>
  <uuid>6c8b0d5e-0f8e-4bd4-9d43-5a5c1b9f2a11</uuid>
  <description>shop &amp; blog, &quot;prod&quot;</description>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='KiB'>2097152</memory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact' check='full'>
    <model fallback='forbid'>Westmere</model>
    <vendor>Intel</vendor>
    <feature policy='require' name='pclmuldq'/>
    <feature policy='disable' name='x2apic'/>
  </cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='network'>
      <mac address='52:54:00:6b:3c:58'/>
      <source network='default'/>
      <target dev='vnet7'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+64055</label>
  </seclabel>
  <qemu:commandline>
    <qemu:arg value='-s'/>
  </qemu:commandline>
</domain>
"""

SAMPLES = [LIBVIRT_LIKE, *(p.read_bytes() for p in sorted(DOMAINS.glob("*.xml")) if b"<!--" not in p.read_bytes())]
KNOWLEDGE = load_knowledge()


def parses(data: bytes) -> bool:
    try:
        parse_xml(data, "t")
    except BadInput:
        return False
    return True


def test_the_size_cap_is_xmlsafes() -> None:
    assert MAX_XML_BYTES == XMLSAFE_MAX


def test_libvirts_documents_are_keyed_by_their_decisive_parts() -> None:
    key = decision_key(LIBVIRT_LIKE)
    assert key is not None
    root, name, os_tag, os_type, cpu = key.split(b"\0")
    assert root == b"domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
    assert name == b"<name>web01</name>"
    assert os_tag == b"os"
    assert os_type == b"<type arch='x86_64' machine='pc-q35-7.2'>hvm</type>"
    assert cpu.startswith(b"<cpu mode='custom' match='exact' check='full'>") and cpu.endswith(b"</cpu>")
    for sample in SAMPLES:
        assert decision_key(sample) is not None


def test_the_rest_of_the_document_is_not_in_the_key() -> None:
    # what changes between two starts of one domain: its id, its ports, its network devices
    elsewhere = LIBVIRT_LIKE.replace(b"vnet7", b"vnet12").replace(b"5901", b"5907").replace(b"id='3' ", b"id='4' ")
    assert decision_key(elsewhere) == decision_key(LIBVIRT_LIKE)
    assert parse_domain(elsewhere, "x", KNOWLEDGE) == parse_domain(LIBVIRT_LIKE, "x", KNOWLEDGE)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<domain type='kvm'", b"<domain type='qemu'"),
        (b"<name>web01</name>", b"<name>web02</name>"),
        (b"arch='x86_64'", b"arch='i686'"),
        (b"<os>", b"<os xmlns='urn:elsewhere'>"),
        (b"<domain type='kvm' id='3'", b"<domain type='kvm' id='3' xmlns='urn:elsewhere'"),
        (b"xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'", b"xmlns:qemu='urn:other'"),
        (b"<model fallback='forbid'>Westmere</model>", b"<model fallback='forbid'>Haswell</model>"),
        (b"policy='disable' name='x2apic'", b"policy='require' name='x2apic'"),
    ],
)
def test_each_decisive_part_changes_the_key(old: bytes, new: bytes) -> None:
    assert old in LIBVIRT_LIKE
    changed = decision_key(LIBVIRT_LIKE.replace(old, new))
    assert changed is not None and changed != decision_key(LIBVIRT_LIKE)


def test_a_cpu_element_below_another_is_not_the_guests() -> None:
    """Only the root's own <cpu> counts (parse_domain's root.findall("cpu")), and only it is keyed."""
    doc = b"<domain type='kvm'><name>v</name><metadata><cpu mode='host-passthrough'/></metadata></domain>"
    key = decision_key(doc)
    assert key is not None and key.split(b"\0")[-1] == b""
    assert parse_domain(doc, "x", KNOWLEDGE).cpu.mode == "default"
    plain = b"<domain type='kvm'><name>v</name><metadata><cpu mode='custom'/></metadata></domain>"
    assert decision_key(plain) == key


@pytest.mark.parametrize(
    "doc",
    [
        b"<?xml version='1.0'?><domain><name>v</name></domain>",
        b"\xef\xbb\xbf<domain><name>v</name></domain>",
        b"<!DOCTYPE domain><domain><name>v</name></domain>",
        b"<domain><!-- a comment could hide a <cpu> --><name>v</name></domain>",
        b"<domain><name><![CDATA[v]]></name></domain>",
        b"<domain><name>&#118;</name></domain>",
        b"<domain><name>&nbsp;</name></domain>",
        b"<domain><name>v</name><cpu mode='host-model'/><cpu mode='custom'/></domain>",
        b"<domain><name>v</name><name>w</name></domain>",
        b"<domain><os><type arch='x86_64'/></os><os><type arch='aarch64'/></os></domain>",
        b"<domain><os><type arch='x86_64'/><type arch='aarch64'/></os></domain>",
        b"<domain><q:cpu/></domain>",
        b"<domain><name q:x='1'>v</name></domain>",
        b"<domain xmlns:q=''><q:cpu/></domain>",
        b"<domain xmlns:q='a' xmlns:r='a'><name q:x='1' r:x='2'>v</name></domain>",
        b"<domain a='1' a='2'/>",
        b"<domain a='1'b='2'/>",
        b"<domain a=1/>",
        b"<domain a='<'/>",
        b"<domain><name>v</nome></domain>",
        b"<domain><name>v</name>",
        b"<domain/><domain/>",
        b"<domain/>text",
        b"text<domain/>",
        b"<domain>\x01</domain>",
        b"<domain>\0</domain>",
        b"<domain>\xff</domain>",
        b"<domain>\xef\xbf\xbe</domain>",
        b"<domain>]]></domain>",
        b"< domain/>",
        b"<1domain/>",
        b"<domain:/>",
        b"<domain xmlns:q='u'><q:0cpu/></domain>",
        b"<domain xmlns:q='u'><q:c:pu/></domain>",
        b"",
        b"   ",
    ],
)
def test_what_the_key_does_not_vouch_for(doc: bytes) -> None:
    assert decision_key(doc) is None


def test_every_keyed_document_parses() -> None:
    """Cut every sample at every byte and insert troublesome bytes everywhere: whatever gets a key,
    cpuguard's own parser reads too."""
    troubles = [b"<", b">", b"&", b"'", b'"', b"/", b":", b"=", b" ", b"</a>", b"<a>", b"\0", b"\xff", b"&lt;"]
    keyed = 0
    for sample in SAMPLES:
        variants = [sample[:cut] for cut in range(len(sample))]
        variants += [sample[:i] + t + sample[i:] for i in range(0, len(sample), 3) for t in troubles]
        for doc in variants:
            if decision_key(doc) is not None:
                keyed += 1
                assert parses(doc), doc
    assert keyed > 100  # the test looked at documents with keys, not only at refusals


def test_hostile_domain_documents_get_no_key_or_parse() -> None:
    from tests.hostile.catalog import DOMAIN_XML

    for case in DOMAIN_XML:
        if decision_key(case.data) is not None:
            assert parses(case.data), case.name


def test_documents_with_one_key_parse_to_one_guest() -> None:
    """Whatever differs outside the key, parse_domain sees the same guest."""
    base = LIBVIRT_LIKE
    variants = [
        base.replace(b"<boot dev='hd'/>", b"<boot dev='network'/><bootmenu enable='yes'/>"),
        base.replace(b"<memory unit='KiB'>2097152</memory>", b"<memory unit='KiB'>4194304</memory>"),
        base.replace(b"<devices>", b"<devices><disk type='file'><source file='/a&amp;b'/></disk>"),
        base.replace(b"</metadata>", b"<cpu mode='host-passthrough'/></metadata>"),
        base.replace(b"\n    <interface", b"<interface"),
    ]
    for variant in variants:
        assert decision_key(variant) == decision_key(base)
        assert parse_domain(variant, "x", KNOWLEDGE) == parse_domain(base, "x", KNOWLEDGE)


ALPHABET = b"<>/&;'\"=:! ?\n\tabcdnmeptuyosx-_.0\x00\xff\xc3\xa9"


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_random_edits_never_key_what_the_parser_refuses(data: st.DataObject) -> None:
    doc = bytearray(data.draw(st.sampled_from(SAMPLES)))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(doc)))
        if data.draw(st.booleans()):
            doc[at:at] = bytes(data.draw(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=4)))
        else:
            del doc[at : at + data.draw(st.integers(1, 6))]
    if decision_key(bytes(doc)) is not None:
        assert parses(bytes(doc))


CAPTURED = Path(__file__).parent / "data"


def test_what_libvirt_hands_the_hook_is_keyed_and_its_id_is_not_in_the_key() -> None:
    """Captured from the testbed (scripts/testbed) with a hook that saved its stdin: one guest started,
    migrated away and back, destroyed and started again."""
    captures = {p.name: p.read_bytes() for p in sorted(CAPTURED.glob("libvirt9-testbed-*.xml"))}
    assert len(captures) == 4
    keys = {name: decision_key(data) for name, data in captures.items()}
    assert None not in keys.values()
    first, third = (
        captures["libvirt9-testbed-prepare-begin-first-start.xml"],
        captures["libvirt9-testbed-prepare-begin-third-start.xml"],
    )
    assert first.split(b"\n", 1)[0] == b"<domain type='qemu' id='1'>"
    assert third.split(b"\n", 1)[0] == b"<domain type='qemu' id='3'>"
    assert (
        keys["libvirt9-testbed-prepare-begin-first-start.xml"] == keys["libvirt9-testbed-prepare-begin-third-start.xml"]
    )
    # after a migration libvirt's live definition has the CPU as QEMU ran it: another question
    assert (
        keys["libvirt9-testbed-prepare-begin-after-migration.xml"]
        != keys["libvirt9-testbed-prepare-begin-first-start.xml"]
    )
    for data in captures.values():
        assert parses(data)
