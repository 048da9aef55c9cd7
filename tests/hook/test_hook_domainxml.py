"""cpuguard.hook.domainxml: what it reads of a domain document, cpuguard's parser reads too, and the same."""

from __future__ import annotations

from pathlib import Path

import pytest
from hook_helpers import DOMAINS
from hypothesis import given, settings
from hypothesis import strategies as st

from cpuguard.domain import parse_domain
from cpuguard.errors import BadInput
from cpuguard.hook.domainxml import MAX_XML_BYTES, Guest, read_guest
from cpuguard.knowledge import load_knowledge
from cpuguard.records import Domain
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


def parses(data: bytes) -> Domain | None:
    try:
        return parse_domain(data, "t", KNOWLEDGE)
    except BadInput:
        return None


def agrees(guest: Guest, domain: Domain | None) -> bool:
    """What read_guest read is what parse_domain read (names as written: quick.py canonicalises them)."""
    assert domain is not None
    assert (guest.virt_type, guest.name, guest.arch) == (domain.virt_type, domain.name, domain.arch)
    if guest.cpu is None:
        return domain.cpu.mode == "default"
    features: dict[str, set[str]] = {}
    for name, policy in guest.cpu.features:
        features.setdefault(policy, set()).add(KNOWLEDGE.vocabulary.try_canonical(name) or name)
    cpu = domain.cpu
    assert features.get("require", set()) | features.get("force", set()) == cpu.required
    assert (features.get("optional", set()), features.get("disable", set())) == (cpu.optional, cpu.disabled)
    assert features.get("forbid", set()) == cpu.forbidden
    assert (guest.cpu.vendor or None) == cpu.vendor
    model = KNOWLEDGE.cpu_map.find(guest.cpu.model) if guest.cpu.model else None
    return cpu.mode == "default" or (model.name if model else guest.cpu.model or None) == cpu.model


def test_the_size_cap_is_xmlsafes() -> None:
    assert MAX_XML_BYTES == XMLSAFE_MAX


def test_libvirts_documents_are_read() -> None:
    guest = read_guest(LIBVIRT_LIKE)
    assert guest is not None and guest.cpu is not None
    assert (guest.virt_type, guest.name, guest.arch) == ("kvm", "web01", "x86_64")
    assert (guest.cpu.mode, guest.cpu.model, guest.cpu.vendor) == ("custom", "Westmere", "Intel")
    assert guest.cpu.features == [("pclmuldq", "require"), ("x2apic", "disable")]
    for sample in SAMPLES:
        found = read_guest(sample)
        assert found is not None and agrees(found, parses(sample))


def test_a_cpu_element_below_another_is_not_the_guests() -> None:
    """Only the root's own <cpu> counts (parse_domain's root.findall("cpu"))."""
    doc = b"<domain type='kvm'><name>v</name><metadata><cpu mode='host-passthrough'/></metadata></domain>"
    guest = read_guest(doc)
    assert guest is not None and guest.cpu is None
    assert parse_domain(doc, "x", KNOWLEDGE).cpu.mode == "default"


def test_entities_and_attribute_whitespace_are_read_as_xml_reads_them() -> None:
    doc = b"<domain type='kvm'><name>a&amp;b</name><cpu mode='custom'><vendor>\n Intel\n</vendor></cpu></domain>"
    guest = read_guest(doc)
    assert guest is not None and guest.cpu is not None
    assert (guest.name, guest.cpu.vendor) == ("a&b", "Intel")
    tabbed = read_guest(b"<domain type='k\tv'><name>v</name></domain>")
    assert tabbed is not None and tabbed.virt_type == parse_xml(b"<domain type='k\tv'/>", "t").get("type") == "k v"


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
        b"<domain><name>v</name><cpu><model>a</model><model>b</model></cpu></domain>",
        b"<domain><name>v</name><cpu><vendor>a</vendor><vendor>b</vendor></cpu></domain>",
        b"<domain><name>v</name><cpu><feature policy='require'/></cpu></domain>",
        b"<domain xmlns='urn:elsewhere'><name>v</name></domain>",
        b"<domain><name>v</name><os xmlns='urn:elsewhere'><type arch='i686'/></os></domain>",
        b"<other><name>v</name></other>",
        b"<domain>\r\n<name>v</name></domain>",
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
def test_what_it_does_not_vouch_for(doc: bytes) -> None:
    assert read_guest(doc) is None


def test_every_document_read_parses_the_same() -> None:
    """Cut every sample at every byte and insert troublesome bytes everywhere: whatever is read,
    cpuguard's own parser reads too, and the same."""
    troubles = [b"<", b">", b"&", b"'", b'"', b"/", b":", b"=", b" ", b"</a>", b"<a>", b"\0", b"\xff", b"&lt;"]
    read = 0
    for sample in SAMPLES:
        variants = [sample[:cut] for cut in range(len(sample))]
        variants += [sample[:i] + t + sample[i:] for i in range(0, len(sample), 3) for t in troubles]
        for doc in variants:
            guest = read_guest(doc)
            if (
                guest is not None
                and guest.name
                and (guest.cpu is None or guest.cpu.mode in ("custom", "host-model", "host-passthrough", "maximum"))
            ):
                read += 1
                assert parse_xml(doc, "t") is not None, doc
    assert read > 100  # the test looked at documents it read, not only at refusals


def test_hostile_domain_documents_are_not_read_or_parse() -> None:
    from tests.hostile.catalog import DOMAIN_XML

    for case in DOMAIN_XML:
        if read_guest(case.data) is not None:
            assert parse_xml(case.data, "t") is not None, case.name


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
    if read_guest(bytes(doc)) is not None:
        assert parse_xml(bytes(doc), "t") is not None


CAPTURED = Path(__file__).parent / "data"


def test_what_libvirt_hands_the_hook_is_read() -> None:
    """Captured from the testbed (scripts/testbed) with a hook that saved its stdin: one guest started,
    migrated away and back, destroyed and started again."""
    captures = {p.name: p.read_bytes() for p in sorted(CAPTURED.glob("libvirt9-testbed-*.xml"))}
    assert len(captures) == 4
    for data in captures.values():
        guest = read_guest(data)
        assert guest is not None and agrees(guest, parses(data))
