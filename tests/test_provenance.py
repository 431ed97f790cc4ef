"""The provenance reader (backend/provenance): C2PA offline, IPTC digital source types, generator signatures,
and hostile metadata that must be skipped and reported, never followed."""

from __future__ import annotations

import io
import json
import random
import socket
import struct
import time
import tracemalloc
from collections.abc import Iterator

import c2pa
import pytest

from backend.provenance import (
    InputTooLarge,
    Provenance,
    ProvenanceLimits,
    TrustAnchorsError,
    check_trust_anchors,
    read_provenance,
)
from backend.provenance.c2pa_evidence import OFFLINE_SETTINGS, read_c2pa
from backend.provenance.fields import MetadataField
from backend.provenance.signatures import SIGNATURES, match_signatures
from backend.provenance.source_types import SOURCE_TYPES
from testbed.provenance_files import (
    IPTC,
    LoopbackListener,
    SigningAuthority,
    deflated_zeros,
    encoded,
    exif_bytes,
    fixture,
    jpeg_segments,
    jpeg_with_app1,
    jpeg_with_xmp,
    make_authority,
    png_chunk,
    png_with_chunks,
    png_with_text,
    signed_jpeg,
    source_type_xmp,
    xmp_packet,
)

LIMITS = ProvenanceLimits()
A1111_PARAMETERS = ("a photo of an astronaut riding a horse\nNegative prompt: blurry\n"
                    "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, "
                    "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")
COMFY_PROMPT = json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20}},
                           "4": {"class_type": "CheckpointLoaderSimple",
                                 "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}}})
COMFY_WORKFLOW = json.dumps({"last_node_id": 9, "last_link_id": 9, "nodes": [{"id": 3, "type": "KSampler"}]})


def says(provenance: Provenance, kind: str | None = None) -> set[str | None]:
    return {s.says for s in provenance.signals if kind is None or s.kind == kind}


# --- The five C2PA fixtures --------------------------------------------------------------------------------

def test_c_jpg_is_a_valid_signature_declaring_algorithmic_media_from_a_signer_not_in_the_trust_list() -> None:
    provenance = read_provenance(fixture("C.jpg"))
    c2pa = provenance.c2pa
    assert c2pa is not None
    assert c2pa.state == "untrusted" and not c2pa.trusted and c2pa.errors == ()
    assert c2pa.signer == "C2PA Signer" and c2pa.issuer == "C2PA Test Signing Cert"
    assert c2pa.claim_generator == "make_test_images/0.26.0 c2pa-rs/0.26.0"
    assert c2pa.summary == "signed by C2PA Signer (C2PA Test Signing Cert), not in your trust list"
    assert [(t.type, t.says, t.action, t.manifest) for t in c2pa.source_types] == [
        ("algorithmicMedia", "ai", "c2pa.created", "active")]
    ai = [s for s in provenance.signals if s.says == "ai"]
    assert [(s.kind, s.source) for s in ai] == [("c2pa_source_type", "c2pa")]
    assert "not in your trust list" in ai[0].detail
    # An AI claim counts whoever signed it.
    assert provenance.declares_ai and not provenance.invalid_manifest_claims_ai and not provenance.trusted_capture
    assert provenance.ai_evidence() == ["Content Credentials"]


def test_ca_jpg_is_a_valid_edit_that_claims_no_ai() -> None:
    provenance = read_provenance(fixture("CA.jpg"))
    assert provenance.c2pa is not None and provenance.c2pa.state == "untrusted"
    assert [(s.kind, s.says, s.detail) for s in provenance.signals] == [
        ("c2pa_action", "edited", "Content Credentials: c2pa.color_adjustments")]
    assert not provenance.declares_ai and not provenance.trusted_capture


@pytest.mark.parametrize(("name", "error"), [("E-sig-CA.jpg", "claimSignature.mismatch"),
                                             ("XCA.jpg", "assertion.dataHash.mismatch")])
def test_tampered_fixtures_are_invalid_and_never_trusted(name: str, error: str) -> None:
    provenance = read_provenance(fixture(name), trust_anchors_pem=make_authority().root_pem)
    assert provenance.c2pa is not None
    assert provenance.c2pa.state == "invalid" and not provenance.c2pa.trusted
    assert error in provenance.c2pa.errors
    assert provenance.c2pa.summary.startswith(f"invalid Content Credentials ({error}")
    assert not provenance.trusted_capture and not provenance.declares_ai


def test_a_jpg_has_no_manifest_and_its_metadata_claims_no_ai() -> None:
    provenance = read_provenance(fixture("A.jpg"))
    assert provenance.c2pa is None
    assert not provenance.declares_ai and not provenance.trusted_capture
    # Its EXIF/XMP name Lightroom and a Canon camera: shown, unsigned, deciding nothing.
    assert ("editor", "edited") in {(s.kind, s.says) for s in provenance.signals}
    assert ("camera", "capture") in {(s.kind, s.says) for s in provenance.signals}


@pytest.mark.parametrize("name", ["A.jpg", "C.jpg", "CA.jpg", "E-sig-CA.jpg", "XCA.jpg"])
def test_to_dict_has_the_design_shape_and_reads_back(name: str) -> None:
    provenance = read_provenance(fixture(name))
    stored = json.loads(json.dumps(provenance.to_dict()))
    assert set(stored) == {"c2pa", "signals"}
    for signal in stored["signals"]:
        assert set(signal) == {"kind", "says", "detail", "source"}
        assert signal["says"] in ("ai", "edited", "capture", None)
    if stored["c2pa"] is not None:
        assert set(stored["c2pa"]) == {"state", "trusted", "signer", "issuer", "signed_at", "claim_generator",
                                       "digital_source_types", "errors", "summary"}
    again = Provenance.from_dict(stored)
    assert again == provenance
    assert (again.declares_ai, again.invalid_manifest_claims_ai, again.trusted_capture) == (
        provenance.declares_ai, provenance.invalid_manifest_claims_ai, provenance.trusted_capture)
    assert Provenance.from_dict(None) == Provenance()


# --- Trust: manifests signed here by a throwaway certificate authority -------------------------------------

@pytest.fixture(scope="module")
def authority() -> SigningAuthority:
    return make_authority()


@pytest.fixture(scope="module")
def capture_jpeg(authority: SigningAuthority) -> bytes:
    return signed_jpeg(authority, "digitalCapture")


def test_a_capture_signed_by_an_anchor_in_the_trust_list_is_a_trusted_capture(
        authority: SigningAuthority, capture_jpeg: bytes) -> None:
    provenance = read_provenance(capture_jpeg, trust_anchors_pem=authority.root_pem)
    assert provenance.c2pa is not None and provenance.c2pa.state == "valid" and provenance.c2pa.trusted
    assert provenance.c2pa.summary == "signed by Test Camera Signer (Fakewatch Tests), in your trust list"
    assert provenance.trusted_capture and not provenance.declares_ai


def test_the_same_capture_without_trust_anchors_reads_not_in_your_trust_list(capture_jpeg: bytes) -> None:
    provenance = read_provenance(capture_jpeg)
    assert provenance.c2pa is not None and provenance.c2pa.state == "untrusted"
    assert provenance.c2pa.summary == "signed by Test Camera Signer (Fakewatch Tests), not in your trust list"
    assert says(provenance, "c2pa_source_type") == {"capture"}
    assert not provenance.trusted_capture


def test_a_capture_signed_by_another_authority_is_not_trusted(capture_jpeg: bytes) -> None:
    provenance = read_provenance(capture_jpeg, trust_anchors_pem=make_authority().root_pem)
    assert provenance.c2pa is not None and provenance.c2pa.state == "untrusted"
    assert not provenance.trusted_capture


def test_an_ai_claim_with_a_generator_name_counts_from_an_unknown_signer(authority: SigningAuthority) -> None:
    provenance = read_provenance(signed_jpeg(authority, "trainedAlgorithmicMedia", software_agent="DALL-E 3"))
    assert provenance.c2pa is not None and provenance.c2pa.state == "untrusted"
    assert provenance.declares_ai
    assert ("generator", "c2pa softwareAgent") in {(s.kind, s.source) for s in provenance.signals}
    assert provenance.ai_evidence() == ["Content Credentials", "OpenAI"]


def test_an_invalid_manifest_that_claims_ai_is_never_real_but_is_no_ai_declaration(
        authority: SigningAuthority) -> None:
    signed = signed_jpeg(authority, "trainedAlgorithmicMedia")
    scan = jpeg_segments(signed)[-1][1]
    tampered = signed[: scan + 40] + bytes(b ^ 0x55 for b in signed[scan + 40 : scan + 60]) + signed[scan + 60 :]
    provenance = read_provenance(tampered, trust_anchors_pem=authority.root_pem)
    assert provenance.c2pa is not None and provenance.c2pa.state == "invalid"
    assert "assertion.dataHash.mismatch" in provenance.c2pa.errors
    assert provenance.invalid_manifest_claims_ai
    assert not provenance.declares_ai and not provenance.trusted_capture
    assert provenance.ai_evidence() == []


def test_a_capture_manifest_with_an_ai_ingredient_is_no_trusted_capture() -> None:
    stored = {"c2pa": {"state": "valid", "signer": "x", "digital_source_types": []},
              "signals": [{"kind": "c2pa_source_type", "says": "capture", "detail": "", "source": "c2pa"},
                          {"kind": "c2pa_source_type", "says": "ai", "detail": "",
                           "source": "c2pa ingredient 'a.png'"}]}
    provenance = Provenance.from_dict(stored)
    assert provenance.declares_ai and not provenance.trusted_capture


def test_trust_anchors_that_are_not_certificates_are_refused() -> None:
    with pytest.raises(TrustAnchorsError):
        read_provenance(fixture("C.jpg"), trust_anchors_pem="not a certificate")
    with pytest.raises(TrustAnchorsError):
        check_trust_anchors("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert check_trust_anchors(None) == 0 and check_trust_anchors("") == 0
    assert check_trust_anchors(make_authority().root_pem * 2) == 2


# --- Offline: no socket from Python, no connection from the native library ---------------------------------

def test_the_offline_settings_turn_off_fetching() -> None:
    assert OFFLINE_SETTINGS["verify"]["remote_manifest_fetch"] is False
    assert OFFLINE_SETTINGS["verify"]["ocsp_fetch"] is False
    assert OFFLINE_SETTINGS["core"]["allowed_network_hosts"] == []


def test_reading_opens_no_socket(monkeypatch: pytest.MonkeyPatch, authority: SigningAuthority) -> None:
    files = [fixture(n) for n in ("A.jpg", "C.jpg", "CA.jpg", "E-sig-CA.jpg", "XCA.jpg")]
    files.append(signed_jpeg(authority, "digitalCapture", remote_url="https://example.invalid/m.c2pa"))

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the provenance reader opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for data in files:
        read_provenance(data, trust_anchors_pem=authority.root_pem)


@pytest.fixture
def listener() -> Iterator[LoopbackListener]:
    server = LoopbackListener()
    yield server
    server.close()


def _wait_for_connections(server: LoopbackListener, seconds: float = 0.5) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not server.connections:
        time.sleep(0.02)
    return len(server.connections)


def test_a_remote_manifest_is_reported_and_never_fetched(listener: LoopbackListener,
                                                         authority: SigningAuthority) -> None:
    remote = signed_jpeg(authority, "trainedAlgorithmicMedia", remote_url=listener.url("/manifest.c2pa"))
    provenance = read_provenance(remote)
    assert provenance.c2pa is None
    assert [(s.kind, s.says) for s in provenance.signals] == [("remote_manifest", None)]
    assert listener.url("/manifest.c2pa") in provenance.signals[0].detail
    # The native reader itself, with the reader's settings, refuses to fetch too.
    evidence, signals, _ = read_c2pa(remote, "image/jpeg", None, LIMITS)
    assert evidence is None and [s.kind for s in signals] == ["remote_manifest"]
    assert _wait_for_connections(listener) == 0


def test_the_listener_would_see_a_fetch_if_fetching_were_on(listener: LoopbackListener,
                                                            authority: SigningAuthority) -> None:
    """Proves the test above can fail: c2pa's defaults fetch remote manifests."""
    remote = signed_jpeg(authority, "trainedAlgorithmicMedia", remote_url=listener.url("/manifest.c2pa"))
    context = c2pa.Context.from_dict({"verify": {"remote_manifest_fetch": True, "ocsp_fetch": False}})
    with pytest.raises(c2pa.C2paError):
        c2pa.Reader("image/jpeg", __import__("io").BytesIO(remote), None, context)
    assert _wait_for_connections(listener, 3) >= 1


def test_revocation_is_never_asked_of_the_ocsp_responder(listener: LoopbackListener) -> None:
    authority = make_authority(ocsp_url=listener.url("/ocsp"))
    signed = signed_jpeg(authority, "digitalCapture")
    provenance = read_provenance(signed, trust_anchors_pem=authority.root_pem)
    assert provenance.c2pa is not None and provenance.c2pa.state == "valid"
    assert _wait_for_connections(listener) == 0
    # And with OCSP fetching on, the same file does reach the responder (so the check above can fail).
    context = c2pa.Context.from_dict({"verify": {"ocsp_fetch": True, "remote_manifest_fetch": False},
                                      "trust": {"trust_anchors": authority.root_pem}})
    c2pa.Reader("image/jpeg", io.BytesIO(signed), None, context).close()
    assert _wait_for_connections(listener, 3) >= 1


# --- IPTC digital source types in XMP ----------------------------------------------------------------------

@pytest.mark.parametrize(("term", "expected"), sorted(SOURCE_TYPES.items()))
def test_each_iptc_digital_source_type_in_xmp(term: str, expected: str) -> None:
    provenance = read_provenance(jpeg_with_xmp(source_type_xmp(term)))
    assert [(s.kind, s.says, s.detail) for s in provenance.signals] == [
        ("iptc_source_type", expected, f"IPTC digital source type: {term}")]
    assert provenance.signals[0].source == "jpeg xmp Iptc4xmpExt:DigitalSourceType"
    assert provenance.declares_ai == (expected == "ai")
    assert not provenance.trusted_capture  # unsigned metadata never makes a trusted capture


@pytest.mark.parametrize("packet", [
    xmp_packet(f'><Iptc4xmpExt:DigitalSourceType rdf:resource="{IPTC}trainedAlgorithmicMedia"/>'),
    xmp_packet(f"><Iptc4xmpExt:DigitalSourceType>{IPTC}trainedAlgorithmicMedia</Iptc4xmpExt:DigitalSourceType>"),
    xmp_packet('Iptc4xmpExt:DigitalSourceType="TrainedAlgorithmicMedia">'),
], ids=["rdf-resource", "element-text", "bare-term-any-case"])
def test_digital_source_type_in_any_rdf_spelling(packet: str) -> None:
    assert says(read_provenance(jpeg_with_xmp(packet)), "iptc_source_type") == {"ai"}


def test_an_unknown_digital_source_type_says_nothing() -> None:
    assert read_provenance(jpeg_with_xmp(source_type_xmp("somethingNew"))).signals == ()


def test_xmp_in_png_and_webp() -> None:
    packet = source_type_xmp("compositeWithTrainedAlgorithmicMedia")
    png = png_with_text([("iTXt", "XML:com.adobe.xmp", packet)])
    webp = encoded("WEBP", xmp=packet.encode())
    for data, source in [(png, "png xmp Iptc4xmpExt:DigitalSourceType"),
                         (webp, "webp xmp Iptc4xmpExt:DigitalSourceType")]:
        provenance = read_provenance(data)
        assert [(s.kind, s.says, s.source) for s in provenance.signals] == [("iptc_source_type", "ai", source)]


def test_xmp_found_by_its_wrapper_in_other_formats() -> None:
    gif = encoded("GIF")
    packet = source_type_xmp("trainedAlgorithmicMedia").encode()
    with_xmp = gif[:-1] + packet + gif[-1:]
    assert [(s.kind, s.source) for s in read_provenance(with_xmp).signals] == [
        ("iptc_source_type", "gif xmp Iptc4xmpExt:DigitalSourceType")]
    unterminated = gif[:-1] + packet[: packet.find(b"</x:xmpmeta>")]
    assert [s.kind for s in read_provenance(unterminated).signals] == ["unreadable"]


def test_iptc_ai_system_properties_declare_ai() -> None:
    packet = xmp_packet('Iptc4xmpExt:AISystemUsed="Some Model v2" '
                        'Iptc4xmpExt:AIPromptInformation="a cat in a hat">')
    provenance = read_provenance(jpeg_with_xmp(packet))
    assert {(s.kind, s.says) for s in provenance.signals} == {("iptc_ai_system", "ai")}
    assert len(provenance.signals) == 2


def test_xmp_creator_tool_and_credit_line() -> None:
    packet = xmp_packet('xmp:CreatorTool="Adobe Firefly" photoshop:Credit="Made with Google AI">')
    provenance = read_provenance(jpeg_with_xmp(packet))
    assert {(s.source, s.detail.split(":")[0]) for s in provenance.signals} == {
        ("jpeg xmp xmp:CreatorTool", "Adobe Firefly"), ("jpeg xmp photoshop:Credit", "Google AI")}
    assert provenance.ai_evidence() == ["Adobe Firefly", "Google AI"]


# --- EXIF ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("software", "expected"), [
    ("Adobe Photoshop 25.0 (Windows)", {"edited"}),
    ("GIMP 2.10.36", {"edited"}),
    ("Adobe Lightroom 7.1", {"edited"}),
    ("Snapseed 2.0", {"edited"}),
    ("Midjourney", {"ai"}),
    ("DALL-E 3", {"ai"}),  # Pillow writes EXIF ASCII as ASCII, so no "\u00b7" here (the row test has it)
    ("Adobe Firefly", {"ai"}),
    ("NovelAI", {"ai"}),
    ("Stable Diffusion XL", {"ai"}),
    ("Leonardo.Ai", {"ai"}),
    ("Android UQ1A.240205.004", set()),
    ("HDR+ 1.0.580148827zd", set()),
    ("Google", set()),
    ("17.1", set()),
])
def test_exif_software(software: str, expected: set[str]) -> None:
    for data in (encoded("JPEG", exif=exif_bytes({0x0131: software})),
                 encoded("WEBP", exif=exif_bytes({0x0131: software})),
                 encoded("PNG", exif=exif_bytes({0x0131: software}))):
        provenance = read_provenance(data)
        assert says(provenance) == expected, data[:4]
        assert all(s.source.endswith("exif Software") for s in provenance.signals)


def test_exif_camera_is_an_unsigned_capture_claim() -> None:
    provenance = read_provenance(encoded("JPEG", exif=exif_bytes({0x010F: "Canon", 0x0110: "Canon EOS R5"})))
    assert [(s.kind, s.says, s.detail) for s in provenance.signals] == [
        ("camera", "capture", "Camera: Canon EOS R5 (unsigned EXIF, easily copied)")]
    assert not provenance.trusted_capture


def test_exif_image_description_credit_line() -> None:
    provenance = read_provenance(encoded("JPEG", exif=exif_bytes({0x010E: "Edited with Google AI"})))
    assert provenance.declares_ai and provenance.signals[0].source == "jpeg exif ImageDescription"


@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le"])
def test_a1111_parameters_in_exif_user_comment(encoding: str) -> None:
    comment = b"UNICODE\x00" + A1111_PARAMETERS.encode(encoding)
    provenance = read_provenance(encoded("JPEG", exif=exif_bytes({}, user_comment=comment)))
    assert [s.detail.split(":")[0] for s in provenance.signals] == ["AUTOMATIC1111 / Forge / SD.Next"]
    assert provenance.signals[0].source == "jpeg exif UserComment"


# --- PNG text chunks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_type", ["tEXt", "zTXt", "iTXt"])
def test_a1111_parameters_in_png_text(chunk_type: str) -> None:
    provenance = read_provenance(png_with_text([(chunk_type, "parameters", A1111_PARAMETERS)]))
    assert [(s.kind, s.says, s.source) for s in provenance.signals] == [
        ("generator", "ai", f"png {chunk_type} 'parameters'")]
    assert provenance.signals[0].detail == ("AUTOMATIC1111 / Forge / SD.Next: generation parameters "
                                            "(Steps: 20, Sampler: Euler a)")
    assert provenance.declares_ai and provenance.ai_evidence() == ["AUTOMATIC1111 / Forge / SD.Next"]


def test_comfyui_prompt_and_workflow_in_png_text() -> None:
    provenance = read_provenance(png_with_text([("tEXt", "prompt", COMFY_PROMPT),
                                                ("tEXt", "workflow", COMFY_WORKFLOW)]))
    assert {(s.detail.split(":")[0], s.source) for s in provenance.signals} == {
        ("ComfyUI", "png tEXt 'prompt'"), ("ComfyUI", "png tEXt 'workflow'")}


def test_a_png_without_text_has_no_signals() -> None:
    assert read_provenance(encoded("PNG")) == Provenance()


# --- The signature table: one example per row, and lookalikes that must not match ---------------------------

def tool(value: str) -> MetadataField:
    return MetadataField("exif Software", "Software", value, "tool")


def caption(value: str, key: str = "dc:description") -> MetadataField:
    return MetadataField(f"jpeg xmp {key}", key, value, "caption")


def params(key: str, value: str) -> MetadataField:
    return MetadataField(f"png tEXt '{key}'", key, value, "params")


ROW_EXAMPLES: dict[str, list[MetadataField]] = {
    "a1111": [params("parameters", A1111_PARAMETERS)],
    "comfyui": [params("prompt", COMFY_PROMPT), params("workflow", COMFY_WORKFLOW)],
    "invokeai": [params("invokeai_metadata", '{"app_version": "4.2.4"}'), params("sd-metadata", "{}"),
                 params("Dream", '"a cat" -s 50')],
    "novelai": [tool("NovelAI"), MetadataField("png tEXt 'Source'", "Source", "NovelAI Diffusion V4 5AB81C7C",
                                               "tool")],
    "fooocus": [params("parameters", '{"version": "Fooocus v2.5.5", "steps": 30}'),
                params("fooocus_scheme", "fooocus")],
    "midjourney": [tool("Midjourney v6.1")],
    "midjourney_job": [caption("a cat --ar 16:9 --v 6.1 Job ID: 1b2d8c4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e",
                               "Description")],
    "openai": [tool("DALL\u00b7E 3"), tool("DALL-E 2"), tool("ChatGPT"), tool("OpenAI API"), tool("GPT-4o"),
               tool("gpt-image-1"), tool("Sora")],
    "firefly": [tool("Adobe Firefly"), tool("Adobe_Firefly/1.0 c2pa-rs/0.25")],
    "google": [tool("Google Imagen 3"), tool("imagen-3.0-generate-002"), tool("Gemini"), tool("SynthID"),
               tool("Nano Banana")],
    "google_credit": [caption("Made with Google AI", "photoshop:Credit"), caption("Edited with Google AI")],
    "microsoft": [tool("Microsoft Designer"), tool("Bing Image Creator"),
                  caption("Image Creator from Microsoft Designer"), tool("Microsoft Responsible AI Image Provenance")],
    "meta": [caption("Imagined with AI"), tool("Meta AI")],
    "stable_diffusion": [tool("Stable Diffusion 3.5"), tool("Stability AI API"), tool("DreamStudio"),
                         tool("SDXL 1.0")],
    "flux": [tool("FLUX.1 [dev]"), tool("Black Forest Labs API"), tool("flux-schnell")],
    "flux_model": [params("workflow", '{"ckpt_name": "flux1-dev.safetensors"}')],
    "leonardo": [tool("Leonardo.Ai")],
    "ideogram": [tool("Ideogram 2.0")],
    "draw_things": [tool("Draw Things")],
    "other_generators": [tool("RunwayML"), tool("Krea.ai"), tool("Playground v2.5"), tool("Kandinsky 3"),
                         tool("Craiyon"), tool("NightCafe"), tool("Dreamina"), tool("Recraft"), tool("Civitai")],
    "video_generators": [tool("Google Veo 3"), tool("Kling AI 2.1"), tool("Pika Labs"), tool("HeyGen"),
                         tool("DeepFaceLab"), tool("FaceFusion 3.0")],
    "photoshop": [tool("Adobe Photoshop 25.0 (Windows)")],
    "lightroom": [tool("Adobe Photoshop Lightroom Classic 13.0")],
    "gimp": [tool("GIMP 2.10.36")],
    "other_editors": [tool("Affinity Photo 2"), tool("Pixelmator Pro"), tool("Snapseed"), tool("darktable 4.6"),
                      tool("Capture One 23"), tool("Canva")],
}


def test_every_row_has_an_example() -> None:
    assert set(ROW_EXAMPLES) == {row.id for row in SIGNATURES}
    assert len({row.id for row in SIGNATURES}) == len(SIGNATURES)


@pytest.mark.parametrize("row", SIGNATURES, ids=[row.id for row in SIGNATURES])
def test_signature_row(row: object) -> None:
    for example in ROW_EXAMPLES[row.id]:  # type: ignore[attr-defined]
        matched = [(r.id, s) for r, s in match_signatures([example], LIMITS.max_match_chars)]
        assert row.id in [r for r, _ in matched], example  # type: ignore[attr-defined]
        signal = dict(matched)[row.id]  # type: ignore[attr-defined]
        assert signal.says == row.says and signal.kind == row.kind  # type: ignore[attr-defined]
        assert signal.source == example.source and signal.detail.startswith(row.name)  # type: ignore[attr-defined]


@pytest.mark.parametrize("field", [
    caption("Protesters outside OpenAI's office in San Francisco"),
    caption("Sora Tanaka", "dc:creator"),
    caption("Shot on a Canon, not made with midjourney"),
    tool("Editor de imagen 2.1"),
    tool("Firefox screenshot"),
    tool("Apple iPhone 15 Pro"),
    tool("Google"),
    tool("Android UQ1A.240205.004"),
    tool("Samsung Galaxy S24 Ultra"),
    params("prompt", "not a graph"),
    params("Comment", "Steps to reproduce: none"),
    caption("a flux capacitor"),
], ids=lambda f: f.value[:30])
def test_lookalikes_match_no_ai_row(field: MetadataField) -> None:
    assert [r.id for r, _ in match_signatures([field], LIMITS.max_match_chars) if r.says == "ai"] == []


def test_a_tool_name_in_a_caption_is_not_read_as_a_tool() -> None:
    packet = xmp_packet('dc:creator="DALL-E Smith">')
    assert read_provenance(jpeg_with_xmp(packet)).signals == ()


# --- Hostile metadata: skipped and reported, never a crash, a hang or a large allocation -------------------

def _read_measured(data: bytes) -> tuple[Provenance, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        provenance = read_provenance(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return provenance, elapsed, peak


@pytest.mark.parametrize("chunk_type", [b"zTXt", b"iTXt"])
def test_a_compressed_text_chunk_that_inflates_to_50_mb_is_refused_from_a_bounded_inflate(
        chunk_type: bytes) -> None:
    bomb = deflated_zeros(50 << 20)
    header = b"parameters\x00\x00" if chunk_type == b"zTXt" else b"parameters\x00\x01\x00\x00\x00"
    data = png_with_chunks(png_chunk(chunk_type, header + bomb), png_chunk(b"tEXt", b"Software\x00GIMP 2.10"))
    assert len(data) < LIMITS.max_input_bytes
    provenance, elapsed, peak = _read_measured(data)
    too_large = [s for s in provenance.signals if s.kind == "too_large"]
    assert [(s.says, s.source) for s in too_large] == [(None, f"png {chunk_type.decode()} 'parameters'")]
    assert "metadata too large" in too_large[0].detail
    assert says(provenance, "editor") == {"edited"}  # the chunks after the bomb are still read
    assert elapsed < 2 and peak < 8 << 20


def test_many_bombs_add_up_to_bounded_work() -> None:
    bomb = png_chunk(b"zTXt", b"parameters\x00\x00" + deflated_zeros(8 << 20))
    data = png_with_chunks(*[bomb] * 200, png_chunk(b"tEXt", b"parameters\x00" + A1111_PARAMETERS.encode()))
    provenance, elapsed, _ = _read_measured(data)
    assert elapsed < 2
    # Eight bombs of 1 MiB each spend the file's 8 MiB (one signal: they read alike), then one for the rest.
    details = [s.detail for s in provenance.signals]
    assert len(details) == 2 and "inflates past" in details[0] and "and the rest skipped" in details[1]
    assert not provenance.declares_ai  # the chunk after the budget was spent is not read


def test_a_claim_is_never_pushed_out_by_reading_problems() -> None:
    broken = [png_chunk(b"zTXt", f"note{i}\x00\x00not zlib".encode()) for i in range(100)]
    provenance = read_provenance(png_with_chunks(png_chunk(b"tEXt", b"Software\x00Midjourney"), *broken))
    assert provenance.declares_ai and provenance.signals[0].kind == "generator"


def test_text_chunks_beyond_the_block_count_are_skipped_and_reported() -> None:
    chunks = [png_chunk(b"tEXt", f"note{i}\x00hello".encode()) for i in range(LIMITS.max_blocks + 20)]
    provenance = read_provenance(png_with_chunks(*chunks))
    assert [s.kind for s in provenance.signals] == ["too_large"]  # once, not once per chunk after the cap


def test_an_oversized_text_chunk_is_skipped_without_being_read() -> None:
    chunk = png_chunk(b"tEXt", b"parameters\x00" + b"x" * (LIMITS.max_block_bytes + 1))
    provenance = read_provenance(png_with_chunks(chunk))
    assert [(s.kind, s.source) for s in provenance.signals] == [("too_large", "png tEXt 'parameters'")]


@pytest.mark.parametrize("broken", [b"parameters\x00\x00not zlib at all",
                                    b"parameters\x00\x00" + deflated_zeros(1 << 20)[:100]],
                         ids=["not-zlib", "ends-early"])
def test_a_broken_compressed_chunk_is_unreadable(broken: bytes) -> None:
    provenance = read_provenance(png_with_chunks(png_chunk(b"zTXt", broken)))
    assert [s.kind for s in provenance.signals] == ["unreadable"]


def test_a_truncated_png_text_chunk_is_unreadable() -> None:
    png = encoded("PNG")
    data = png[:-12] + struct.pack(">I", 5000) + b"tEXtparameters\x00Steps: 2"
    assert [s.kind for s in read_provenance(data).signals] == ["unreadable"]


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9])
def test_truncated_xmp_is_unreadable(cut: float) -> None:
    packet = source_type_xmp("trainedAlgorithmicMedia").encode()
    provenance = read_provenance(jpeg_with_xmp(packet[: int(len(packet) * cut)]))
    assert [(s.kind, s.says, s.source) for s in provenance.signals] == [("unreadable", None, "jpeg xmp")]
    assert not provenance.declares_ai


def test_xmp_with_entities_is_refused() -> None:
    laughs = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
              '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&c;</x:xmpmeta>')
    provenance, elapsed, _ = _read_measured(jpeg_with_xmp(laughs))
    assert [s.kind for s in provenance.signals] == ["unreadable"] and elapsed < 1


def test_an_xmp_element_flood_is_refused_before_parsing() -> None:
    flood = xmp_packet(">" + "<dc:title>x</dc:title>" * (LIMITS.max_xmp_elements + 1))
    data = png_with_text([("iTXt", "XML:com.adobe.xmp", flood)])
    assert [(s.kind, s.source) for s in read_provenance(data).signals] == [("too_large", "png xmp")]


def test_extended_xmp_bigger_than_the_cap_is_skipped() -> None:
    header = b"http://ns.adobe.com/xmp/extension/\x00" + b"0" * 32 + struct.pack(">II", 50 << 20, 0)
    provenance = read_provenance(jpeg_with_app1(header + b"<x:xmpmeta"))
    assert [s.kind for s in provenance.signals] == ["too_large"]


@pytest.mark.parametrize("exif", [
    b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff",  # 65535 entries in a 14-byte block
    b"Exif\x00\x00MM\x00*\x7f\xff\xff\xff",  # IFD offset outside the block
    b"Exif\x00\x00XX\x00*\x00\x00\x00\x08",  # no TIFF byte order
], ids=["entry-count", "ifd-offset", "byte-order"])
def test_corrupt_exif_is_unreadable(exif: bytes) -> None:
    provenance = read_provenance(jpeg_with_app1(exif))
    assert [(s.kind, s.source) for s in provenance.signals] == [("unreadable", "jpeg exif")]


def test_an_exif_value_pointing_outside_the_block_is_unreadable() -> None:
    block = bytearray(exif_bytes({0x0131: "Adobe Photoshop 25.0"}))
    at = block.find(struct.pack(">HH", 0x0131, 2))  # Pillow writes big-endian: tag, type, count, offset
    block[at + 8 : at + 12] = struct.pack(">I", 0x7FFF0000)
    assert [s.kind for s in read_provenance(jpeg_with_app1(bytes(block))).signals] == ["unreadable"]


def _app11(data: bytes) -> int:
    return next(offset for marker, offset, _ in jpeg_segments(data) if marker == 0xEB)


def test_a_corrupt_jumbf_box_is_an_unreadable_manifest() -> None:
    data = fixture("C.jpg")
    start = _app11(data)
    corrupt = data[: start + 40] + bytes(b ^ 0xFF for b in data[start + 40 : start + 80]) + data[start + 80 :]
    provenance = read_provenance(corrupt)
    assert provenance.c2pa is None
    assert [(s.kind, s.says, s.source) for s in provenance.signals] == [("unreadable", None, "c2pa")]
    assert provenance.signals[0].detail.startswith("unreadable C2PA manifest")


def test_a_jumbf_box_with_a_huge_length_is_an_unreadable_manifest() -> None:
    data = fixture("C.jpg")
    start = _app11(data)
    corrupt = data[: start + 20] + b"\x7f\xff\xff\xff" + data[start + 24 :]
    assert [s.kind for s in read_provenance(corrupt).signals] == ["unreadable"]


def test_a_file_cut_inside_its_manifest_is_an_unreadable_manifest() -> None:
    data = fixture("C.jpg")
    provenance = read_provenance(data[: _app11(data) + 300])
    assert provenance.c2pa is None and [s.kind for s in provenance.signals] == ["unreadable"]


def test_an_input_over_the_cap_is_refused_with_a_413() -> None:
    with pytest.raises(InputTooLarge) as refused:
        read_provenance(b"\xff\xd8\xff" + b"\x00" * 2000, limits=ProvenanceLimits(max_input_bytes=1000))
    assert refused.value.status == 413 and refused.value.code == "too_large"
    assert "metadata" in refused.value.message


def test_signals_are_capped() -> None:
    chunks = [png_chunk(b"tEXt", f"Software\x00GIMP {i}".encode()) for i in range(100)]
    assert len(read_provenance(png_with_chunks(*chunks)).signals) == LIMITS.max_signals


def test_random_damage_never_raises(authority: SigningAuthority) -> None:
    """Mutated and truncated copies of every kind of file here: each read returns, quickly."""
    samples = [fixture("C.jpg"), fixture("A.jpg"), signed_jpeg(authority, "trainedAlgorithmicMedia"),
               png_with_text([("zTXt", "parameters", A1111_PARAMETERS), ("iTXt", "XML:com.adobe.xmp",
                                                                            source_type_xmp("digitalCapture"))]),
               encoded("WEBP", exif=exif_bytes({0x0131: "GIMP"}), xmp=source_type_xmp("humanEdits").encode()),
               jpeg_with_xmp(source_type_xmp("trainedAlgorithmicMedia"))]
    rng = random.Random(13)
    for sample in samples:
        for _ in range(25):
            damaged = bytearray(sample)
            for _ in range(rng.randint(1, 8)):
                # Mostly in the first 4 KiB, where the metadata is.
                at = rng.randrange(min(len(damaged), 4096) if rng.random() < 0.8 else len(damaged))
                damaged[at] = rng.randrange(256)
            if rng.random() < 0.3:
                del damaged[rng.randrange(len(damaged)) :]
            started = time.perf_counter()
            result = read_provenance(bytes(damaged))
            assert isinstance(result, Provenance) and time.perf_counter() - started < 2
    for garbage in (b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a<x:xmpmeta"):
        assert isinstance(read_provenance(garbage), Provenance)
