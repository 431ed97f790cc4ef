"""Image files with provenance metadata, made by the tests themselves: PNG text chunks, XMP and EXIF written
into small generated images, C2PA manifests signed by a throwaway certificate authority, and a loopback
listener that records any connection the reader makes."""

from __future__ import annotations

import datetime
import io
import socket
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from PIL import Image, PngImagePlugin

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "c2pa"
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def fixture(name: str) -> bytes:
    """One of the c2pa-python test images in ../shared/fixtures/c2pa; a missing one fails the test."""
    path = FIXTURES / name
    assert path.is_file(), f"C2PA fixture missing: {path} (the five JPEGs come with the shared folder)"
    return path.read_bytes()


def small_image(color: tuple[int, int, int] = (90, 140, 200)) -> Image.Image:
    image = Image.new("RGB", (48, 32), color)
    image.putpixel((3, 3), (255, 255, 255))
    return image


def encoded(fmt: str = "JPEG", **save_args: object) -> bytes:
    buffer = io.BytesIO()
    small_image().save(buffer, fmt, **save_args)
    return buffer.getvalue()


def png_with_text(texts: list[tuple[str, str, str]]) -> bytes:
    """A PNG with text chunks: (chunk type "tEXt" | "zTXt" | "iTXt", keyword, value)."""
    info = PngImagePlugin.PngInfo()
    for kind, key, value in texts:
        if kind == "iTXt":
            info.add_itxt(key, value, zip=True)
        else:
            info.add_text(key, value, zip=kind == "zTXt")
    return encoded("PNG", pnginfo=info)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_chunks(*chunks: bytes) -> bytes:
    """A PNG with raw chunks inserted before IEND (the last 12 bytes)."""
    png = encoded("PNG")
    return png[:-12] + b"".join(chunks) + png[-12:]


def deflated_zeros(size: int) -> bytes:
    """zlib data that inflates to ``size`` zero bytes, compressed a MiB at a time."""
    packer = zlib.compressobj(9)
    block = b"\x00" * (1 << 20)
    out = [packer.compress(block) for _ in range(size >> 20)]
    return b"".join(out) + packer.flush()


def xmp_packet(properties: str, namespaces: str = "") -> str:
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
            'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            f'xmlns:dcterms="http://purl.org/dc/terms/" {namespaces}{properties}'
            '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def source_type_xmp(term: str) -> str:
    return xmp_packet(f'Iptc4xmpExt:DigitalSourceType="{IPTC}{term}">')


def jpeg_with_app1(payload: bytes) -> bytes:
    """A JPEG with one more APP1 segment right after SOI (raw, so broken payloads can be written too)."""
    jpeg = encoded("JPEG")
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def jpeg_with_xmp(packet: str | bytes) -> bytes:
    raw = packet.encode() if isinstance(packet, str) else packet
    return jpeg_with_app1(b"http://ns.adobe.com/xap/1.0/\x00" + raw)


def exif_bytes(ifd0: dict[int, str | bytes], user_comment: bytes | None = None) -> bytes:
    exif = Image.Exif()
    for tag, value in ifd0.items():
        exif[tag] = value
    if user_comment is not None:
        exif.get_ifd(0x8769)[0x9286] = user_comment
    return exif.tobytes()


# --- C2PA: a throwaway certificate authority and manifests it signs -----------------------------------------

@dataclass(frozen=True)
class SigningAuthority:
    root_pem: str
    chain_pem: bytes  # signer certificate, then the root
    key_pem: bytes


def make_authority(signer_name: str = "Test Camera Signer", ocsp_url: str | None = None) -> SigningAuthority:
    """A root and an end-entity certificate with the profile C2PA requires of a signer."""
    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fakewatch Tests")])

    now = datetime.datetime.now(datetime.UTC)
    root_key, signer_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = (x509.CertificateBuilder().subject_name(name("Fakewatch Test Root")).issuer_name(name("Fakewatch Test Root"))
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    builder = (x509.CertificateBuilder().subject_name(name(signer_name)).issuer_name(root.subject)
               .public_key(signer_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                              critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                              critical=False))
    if ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    signer = builder.sign(root_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    return SigningAuthority(
        root_pem=root.public_bytes(pem).decode(),
        chain_pem=signer.public_bytes(pem) + root.public_bytes(pem),
        key_pem=signer_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def signed_jpeg(authority: SigningAuthority, source_type: str | None, *, software_agent: str | None = None,
                remote_url: str | None = None) -> bytes:
    """A small JPEG with a C2PA manifest whose c2pa.created action has this digital source type; with
    ``remote_url`` the manifest is not embedded, only referenced (XMP dcterms:provenance)."""
    action: dict[str, object] = {"action": "c2pa.created"}
    if source_type:
        action["digitalSourceType"] = IPTC + source_type
    if software_agent:
        action["softwareAgent"] = software_agent
    manifest = {"claim_generator_info": [{"name": "fakewatch-tests", "version": "1"}], "title": "made.jpg",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}]}
    # Offline for signing too: no OCSP stapling, no verification fetches.
    context = c2pa.Context.from_dict({"verify": {"verify_after_sign": False, "ocsp_fetch": False,
                                                 "remote_manifest_fetch": False},
                                      "core": {"allowed_network_hosts": []}})
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, authority.chain_pem,
                                                       authority.key_pem, None))
    builder = c2pa.Builder(manifest, context)
    if remote_url:
        builder.set_no_embed()
        builder.set_remote_url(remote_url)
    out = io.BytesIO()
    builder.sign(signer, "image/jpeg", io.BytesIO(encoded("JPEG", quality=90)), out)
    return out.getvalue()


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset, length) of each JPEG segment up to the first scan."""
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segments.append((data[pos + 1], pos, length))
        pos += 2 + length
    segments.append((0xDA, pos, 0))
    return segments


class LoopbackListener:
    """A TCP listener on 127.0.0.1 that answers 404 to anything and counts who connected."""

    def __init__(self) -> None:
        self.connections: list[bytes] = []
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(8)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except OSError:
                continue
            with connection:
                connection.settimeout(1)
                try:
                    self.connections.append(connection.recv(1024))
                    connection.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    self.connections.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._server.close()
