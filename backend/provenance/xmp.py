"""XMP packets parsed with defusedxml (no DTDs, no entities, no external references), after counting
elements so a flood of them is refused before a tree is built. Only the properties below are kept."""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from backend.provenance.evidence import Signal
from backend.provenance.fields import MetadataField, Role
from backend.provenance.limits import ProvenanceLimits

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML = "http://www.w3.org/XML/1998/namespace"
PREFIXES = {
    "http://ns.adobe.com/xap/1.0/": "xmp",
    "http://purl.org/dc/elements/1.1/": "dc",
    "http://purl.org/dc/terms/": "dcterms",
    "http://iptc.org/std/Iptc4xmpExt/2008-02-29/": "Iptc4xmpExt",
    "http://ns.adobe.com/photoshop/1.0/": "photoshop",
    "http://ns.adobe.com/tiff/1.0/": "tiff",
    "http://ns.adobe.com/exif/1.0/": "exif",
    "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#": "stEvt",
    "http://ns.adobe.com/pdf/1.3/": "pdf",
}
# "evidence" fields are read by their name (metadata_evidence.py), not matched against the signature table.
KEPT: dict[str, Role] = {
    "Iptc4xmpExt:DigitalSourceType": "evidence",
    "Iptc4xmpExt:AIPromptInformation": "evidence",
    "dcterms:provenance": "evidence",  # where a remote C2PA manifest is stored
    "Iptc4xmpExt:AISystemUsed": "tool",
    "xmp:CreatorTool": "tool",
    "tiff:Software": "tool",
    "tiff:Make": "tool",
    "tiff:Model": "tool",
    "stEvt:softwareAgent": "tool",  # each step of xmpMM:History
    "pdf:Producer": "tool",
    "photoshop:Credit": "caption",
    "photoshop:Headline": "caption",
    "dc:description": "caption",
    "dc:title": "caption",
    "dc:creator": "caption",
    "exif:UserComment": "params",
}


def read_xmp(packet: bytes, where: str, limits: ProvenanceLimits) -> tuple[list[MetadataField], list[Signal]]:
    source = f"{where} xmp"
    # Each element costs at least one "<"; counting them is a C-speed scan, building the tree is not.
    if packet.count(b"<") > 2 * limits.max_xmp_elements:
        return [], [Signal("too_large", None, f"XMP has more than {limits.max_xmp_elements} elements; "
                                              "skipped", source)]
    try:
        root = fromstring(packet.rstrip(b"\x00 \t\r\n"), forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        return [], [Signal("unreadable", None, f"unreadable XMP ({type(exc).__name__}: {str(exc)[:80]}); "
                                               "skipped", source)]
    return _fields(root, where, limits), []


def _fields(root: Element, where: str, limits: ProvenanceLimits) -> list[MetadataField]:
    fields: list[MetadataField] = []
    # Iterative walk: a property element's name is the field name of any rdf:li/rdf:Alt text beneath it.
    stack: list[tuple[Element, str | None]] = [(root, None)]
    while stack and len(fields) < limits.max_fields:
        element, prop = stack.pop()
        namespace, name = _split(element.tag)
        here = prop if namespace == RDF else _qname(namespace, name)
        for key, value in element.attrib.items():
            key_ns, key_name = _split(key)
            if key_ns == RDF:
                if key_name == "resource":
                    _keep(fields, here, value, where)
            elif key_ns != XML:
                _keep(fields, _qname(key_ns, key_name), value, where)
        if len(element) == 0 and element.text and element.text.strip():
            _keep(fields, here, element.text.strip(), where)
        stack.extend((child, here) for child in reversed(element))
    return fields


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag


def _qname(namespace: str, name: str) -> str | None:
    prefix = PREFIXES.get(namespace)
    return f"{prefix}:{name}" if prefix else None


def _keep(fields: list[MetadataField], qname: str | None, value: str, where: str) -> None:
    role = KEPT.get(qname or "")
    if role is not None and qname is not None:
        fields.append(MetadataField(f"{where} xmp {qname}", qname, value, role))
