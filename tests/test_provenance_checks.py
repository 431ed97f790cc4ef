"""Provenance in checks (issue 13): read from the original bytes when an image is first stored, kept on the image,
weighed by the verdict policy at scoring and when read, and shown by the API, the CLI and the batch exports.

The end-to-end tests run on both backends (a real API, a real worker, the tiny model); the rest call the services
on a migrated database. Files with metadata are the C2PA fixtures and files made by testbed/provenance_files.py."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from backend.api import create_app
from backend.checks.served import served_check
from backend.checks.service import claim_checks, record_score, store_image, submit_image
from backend.checks.verdicts import decision_when_read, provenance_summary
from backend.moderation.reviews import review_queue
from backend.provenance.intake import TrustAnchorsSettingError, load_trust_anchors, read_image_provenance
from backend.settings import Settings
from backend.shapes import CheckOut
from backend.storage.db import session_scope
from backend.storage.schema import Check, Image, ModelVersion
from backend.training.versions import require_active_version
from core.enums import Verdict, VerdictSource
from core.policy import verdict_confidence
from fakewatch.score_command import score_command
from testbed.images import LocalServer, photo_bytes
from testbed.provenance_files import (
    SigningAuthority,
    deflated_zeros,
    fixture,
    jpeg_segments,
    jpeg_with_xmp,
    make_authority,
    png_chunk,
    png_with_chunks,
    png_with_text,
    signed_jpeg,
    source_type_xmp,
)
from testbed.stack import Stack, isolated_settings
from tests.test_batches import read_results, submit_text, wait_for_batch

A1111 = "a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64"


def generator_jpeg() -> bytes:
    """New bytes on every call (a fresh signing key): a manifest that says trainedAlgorithmicMedia, made by ChatGPT."""
    return signed_jpeg(make_authority("Test Generator Signer"), "trainedAlgorithmicMedia", software_agent="ChatGPT")


def corrupt_jumbf() -> bytes:
    data = fixture("C.jpg")
    start = next(offset for marker, offset, _ in jpeg_segments(data) if marker == 0xEB)
    return data[: start + 40] + bytes(b ^ 0xFF for b in data[start + 40 : start + 80]) + data[start + 80 :]


def hostile_files() -> dict[str, bytes]:
    bomb = deflated_zeros(50 << 20)  # inflates to 50 MB from a file of about 50 KB
    return {
        "ztxt-bomb.png": png_with_chunks(png_chunk(b"zTXt", b"parameters\x00\x00" + bomb)),
        "itxt-bomb.png": png_with_chunks(png_chunk(b"iTXt", b"parameters\x00\x01\x00\x00\x00" + bomb)),
        "truncated-xmp.jpg": jpeg_with_xmp(source_type_xmp("trainedAlgorithmicMedia").encode()[:300]),
        "corrupt-jumbf.jpg": corrupt_jumbf(),
    }


# --- end to end, on both backends ---------------------------------------------------------------------------------


def test_an_upload_of_c_jpg_is_fake_by_its_content_credentials(stack: Stack) -> None:
    body = stack.wait_for_check(stack.post_image(fixture("C.jpg"), wait=10).json()["id"])
    assert body["status"] == "done", body
    assert (body["verdict"], body["verdict_source"], body["confidence"], body["flagged"]) == (
        "fake", "provenance", None, True)
    assert 0.0 <= body["score"] <= 1.0  # the model still scored it, and the score is shown
    c2pa = body["provenance"]["c2pa"]
    assert (c2pa["state"], c2pa["trusted"], c2pa["signer"]) == ("untrusted", False, "C2PA Signer")
    assert c2pa["summary"].endswith("not in your trust list")
    assert [(t["type"], t["says"]) for t in c2pa["digital_source_types"]] == [("algorithmicMedia", "ai")]
    assert [(s["kind"], s["says"]) for s in body["provenance"]["signals"]] == [("c2pa_source_type", "ai")]
    assert body["provenance"]["summary"] == "AI: Content Credentials"
    with stack.session() as session:
        check = session.get(Check, body["id"])
        assert check is not None and check.image is not None
        assert check.verdict_source == VerdictSource.PROVENANCE and check.verdict == Verdict.FAKE and check.flagged
        assert check.image.provenance == {key: body["provenance"][key] for key in ("c2pa", "signals")}


def test_a_jpg_without_a_manifest_is_scored_by_the_model(stack: Stack) -> None:
    body = stack.wait_for_check(stack.post_image(fixture("A.jpg"), wait=10).json()["id"])
    assert body["status"] == "done" and body["verdict_source"] == "model", body
    assert body["confidence"] == pytest.approx(verdict_confidence(body["score"], body["verdict"]))
    provenance = body["provenance"]
    assert provenance["c2pa"] is None
    # Its EXIF names an editor and a camera: shown, but an unsigned capture claim decides nothing.
    assert {s["kind"]: s["says"] for s in provenance["signals"]} == {"editor": "edited", "camera": "capture"}
    assert provenance["summary"] == "Edited: Adobe Lightroom; Capture: Canon EOS REBEL T3 (unsigned EXIF)"


def test_a_url_check_reads_provenance_from_the_fetched_bytes(stack: Stack, image_server: LocalServer) -> None:
    path = f"/provenance-{stack.kind}/made.jpg"
    image_server.routes[path] = (200, {"Content-Type": "image/jpeg"}, generator_jpeg())
    response = requests.post(f"{stack.api_url}/api/v1/checks?wait=10", headers=stack.headers(),
                             json={"url": image_server.url(path)}, timeout=60)
    assert response.status_code in (200, 202), response.text
    body = stack.wait_for_check(response.json()["id"])
    assert body["status"] == "done" and body["source"] == "url", body
    assert (body["verdict"], body["verdict_source"], body["confidence"]) == ("fake", "provenance", None)
    assert body["provenance"]["summary"] == "AI: Content Credentials, OpenAI"
    assert body["provenance"]["c2pa"]["signer"] == "Test Generator Signer"


@pytest.mark.parametrize("name", list(hostile_files()))
def test_hostile_metadata_is_skipped_or_refused_by_name_never_a_5xx(stack: Stack, name: str) -> None:
    response = stack.post_image(hostile_files()[name], wait=10)
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:  # refused: the error names the metadata
        assert body["error"]["code"] == "invalid_image" and "metadata" in body["error"]["message"], body
        return
    body = stack.wait_for_check(body["id"])
    assert body["status"] == "done" and body["verdict_source"] == "model", body  # scored, metadata skipped
    problems = [s for s in body["provenance"]["signals"] if s["says"] is None]
    assert problems and problems[0]["kind"] in ("unreadable", "too_large"), body["provenance"]
    assert body["provenance"]["summary"].startswith(("unreadable", "metadata too large")), body["provenance"]


def test_cli_check_shows_the_evidence_and_what_decided(stack: Stack, tmp_path: Path) -> None:
    made, plain = tmp_path / "C.jpg", tmp_path / "A.jpg"
    made.write_bytes(fixture("C.jpg"))
    plain.write_bytes(fixture("A.jpg"))
    env = {**os.environ, **stack.env, "FAKEWATCH_API_URL": stack.api_url, "FAKEWATCH_API_KEY": stack.api_key}
    result = subprocess.run([sys.executable, "-m", "fakewatch.cli", "check", str(made), str(plain)], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first.startswith(f"{made}: AI traces found (by provenance: AI: Content Credentials, score "), first
    assert second.startswith(f"{plain}: ") and "(confidence " in second, second
    assert second.endswith("; provenance: Edited: Adobe Lightroom; Capture: Canon EOS REBEL T3 (unsigned EXIF))")


def test_batch_exports_carry_the_verdict_source_and_the_evidence(stack: Stack, image_server: LocalServer) -> None:
    prefix = f"/export-provenance-{stack.kind}"
    image_server.routes[f"{prefix}/made.jpg"] = (200, {"Content-Type": "image/jpeg"}, generator_jpeg())
    image_server.routes[f"{prefix}/photo.png"] = (200, {"Content-Type": "image/png"},
                                                  photo_bytes("coffee", "PNG", size=150))
    made, photo = image_server.url(f"{prefix}/made.jpg"), image_server.url(f"{prefix}/photo.png")
    batch = wait_for_batch(stack, submit_text(stack, [made, photo], name="provenance")["id"])
    assert batch["status"] == "done", batch
    rows = {row["url"]: row for row in map(json.loads, read_results(stack, batch["id"]).text.splitlines())}
    assert (rows[made]["verdict"], rows[made]["verdict_source"], rows[made]["confidence"]) == (
        "fake", "provenance", None)
    assert rows[made]["provenance"] == "AI: Content Credentials, OpenAI"
    assert rows[photo]["verdict_source"] == "model" and rows[photo]["provenance"] == ""
    assert rows[photo]["confidence"] == pytest.approx(verdict_confidence(rows[photo]["score"], rows[photo]["verdict"]))
    table = list(csv.DictReader(io.StringIO(read_results(stack, batch["id"], fmt="csv").text)))
    by_url = {row["url"]: row for row in table}
    columns = list(table[0])  # the match columns (issue 15) and the review column (issue 16) follow these two,
    # then the video columns (issue 26)
    assert columns[columns.index("verdict_source") + 1] == "provenance" and columns[columns.index("row") - 1] == "review"
    assert (by_url[made]["verdict_source"], by_url[made]["provenance"], by_url[made]["confidence"]) == (
        "provenance", "AI: Content Credentials, OpenAI", "")


# --- the services, on a migrated database -------------------------------------------------------------------------


def _scored(settings: Settings, data: bytes, score: float) -> dict[str, Any]:
    """Submit bytes, give the check the model score ``score`` as a worker would, and return the check's dump."""
    with session_scope(settings) as session:
        check = submit_image(session, data, settings).check
        session.commit()
        assert not check.status.is_final, "these tests need bytes not scored before"
        version = require_active_version(session)
        (claimed,) = claim_checks(session, [check.id], stale_after_s=60)
        record_score(claimed, version, score)
        session.commit()
        dumped: dict[str, Any] = CheckOut().dump(served_check(session, claimed))
        assert decision_when_read(claimed, None).source == dumped["verdict_source"]
        return dumped


@pytest.fixture
def trusting(database: Settings, tmp_path: Path) -> tuple[Settings, SigningAuthority]:
    """Settings whose FAKEWATCH_TRUST_ANCHORS names the root of an authority that signs capture manifests."""
    authority = make_authority("Test Camera Signer")
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(authority.root_pem)
    return database.model_copy(update={"trust_anchors": str(anchors)}), authority


def test_a_trusted_capture_is_real_unless_the_model_says_fake(trusting: tuple[Settings, SigningAuthority],
                                                             active_model: ModelVersion) -> None:
    settings, authority = trusting
    # Each signature is new bytes (ECDSA signs with a random nonce), so each is scored afresh.
    low = _scored(settings, signed_jpeg(authority, "digitalCapture"), 0.01)
    assert (low["verdict"], low["verdict_source"], low["confidence"]) == ("real", "provenance", None)
    assert low["provenance"]["c2pa"]["state"] == "valid"
    assert low["provenance"]["summary"].startswith("Capture: Content Credentials, signed by Test Camera Signer")
    high = _scored(settings, signed_jpeg(authority, "digitalCapture"), 0.99)
    assert (high["verdict"], high["verdict_source"]) == ("uncertain", "provenance")


@pytest.mark.parametrize(("name", "error"), [("E-sig-CA.jpg", "claimSignature.mismatch"),
                                             ("XCA.jpg", "assertion.dataHash.mismatch")])
def test_tampered_content_credentials_go_to_the_review_queue_with_the_reason(database: Settings,
                                                                            active_model: ModelVersion,
                                                                            name: str, error: str) -> None:
    """The model would clear it ("Real 75%"); a manifest that fails validation puts it in the queue instead."""
    body = _scored(database, fixture(name), 0.25)
    assert (body["verdict"], body["verdict_source"], body["flagged"]) == ("uncertain", "provenance", True)
    assert body["provenance"]["c2pa"]["state"] == "invalid"
    assert body["provenance"]["summary"].startswith(f"Invalid Content Credentials ({error}")
    with session_scope(database) as session:
        assert body["id"] in {item.check_id for item in review_queue(session)}


def test_the_same_capture_without_trust_anchors_is_left_to_the_model(trusting: tuple[Settings, SigningAuthority],
                                                                     database: Settings,
                                                                     active_model: ModelVersion) -> None:
    _, authority = trusting
    body = _scored(database, signed_jpeg(authority, "digitalCapture"), 0.01)
    assert (body["verdict"], body["verdict_source"]) == ("real", "model")
    assert body["provenance"]["c2pa"]["state"] == "untrusted"


def test_a_generator_signature_decides_at_scoring_and_when_read(database: Settings,
                                                               active_model: ModelVersion) -> None:
    data = png_with_text([("tEXt", "parameters", A1111)])
    body = _scored(database, data, 0.02)  # the model would clear it
    assert (body["verdict"], body["verdict_source"], body["confidence"], body["flagged"]) == (
        "fake", "provenance", None, True)
    assert body["score"] == pytest.approx(0.02)
    with session_scope(database) as session:
        check = session.get(Check, body["id"])
        assert check is not None
        assert (check.verdict, check.verdict_source, check.flagged) == (Verdict.FAKE, VerdictSource.PROVENANCE, True)


def test_provenance_is_read_once_per_image_and_filled_in_for_older_images(database: Settings) -> None:
    data = fixture("C.jpg")
    with session_scope(database) as session:
        image = store_image(session, data, database)
        assert image.provenance == read_image_provenance(data, database)
        # Stored bytes are never read again: what the row holds stays.
        image.provenance = {"c2pa": None, "signals": []}
        session.commit()
        assert store_image(session, data, database).provenance == {"c2pa": None, "signals": []}
        # An image stored before provenance was read (NULL) gets it the next time its bytes arrive.
        image.provenance = None
        session.commit()
        again = store_image(session, data, database)
        session.commit()
        assert again.id == image.id and again.provenance is not None
        assert again.provenance["c2pa"]["state"] == "untrusted"
        assert session.get(Image, image.id).provenance == again.provenance  # type: ignore[union-attr]


def test_a_wrong_trust_anchor_setting_stops_the_api_with_the_setting_named(database: Settings,
                                                                          tmp_path: Path) -> None:
    assert load_trust_anchors(database) is None  # empty by default: nobody is trusted
    missing = database.model_copy(update={"trust_anchors": str(tmp_path / "nope.pem")})
    with pytest.raises(TrustAnchorsSettingError, match="FAKEWATCH_TRUST_ANCHORS: cannot read"):
        create_app(missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    with pytest.raises(TrustAnchorsSettingError, match="FAKEWATCH_TRUST_ANCHORS"):
        load_trust_anchors(database.model_copy(update={"trust_anchors": str(garbage)}))
    good = tmp_path / "good.pem"
    good.write_text(make_authority().root_pem)
    assert "BEGIN CERTIFICATE" in (load_trust_anchors(database.model_copy(update={"trust_anchors": str(good)}))
                                   or "")


@pytest.mark.parametrize("name", list(hostile_files()))
def test_hostile_metadata_through_the_test_client_is_never_a_5xx(name: str, client: Any, auth_headers: dict[str, str],
                                                                 active_model: ModelVersion) -> None:
    response = client.post("/api/v1/checks", headers=auth_headers,
                           data={"image": (io.BytesIO(hostile_files()[name]), name)})
    assert response.status_code < 500, response.get_data(as_text=True)
    body = response.get_json()
    if response.status_code >= 400:
        assert "metadata" in body["error"]["message"], body
    else:
        assert body["status"] == "queued" and body["provenance"]["signals"][0]["says"] is None, body


def test_score_command_follows_the_policy_and_keeps_its_fixed_fields(tiny_model_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "C.jpg").write_bytes(fixture("C.jpg"))
    (folder / "A.jpg").write_bytes(fixture("A.jpg"))
    (folder / "a1111.png").write_bytes(png_with_text([("tEXt", "parameters", A1111)]))
    result = CliRunner().invoke(score_command, [str(folder), "--model", str(tiny_model_path), "--jsonl"])
    assert result.exit_code == 0, result.output
    rows = {Path(row["path"]).name: row for row in map(json.loads, result.stdout.splitlines())}
    for row in rows.values():
        assert set(row) >= {"path", "score", "verdict", "model_version", "verdict_source", "provenance"}
        assert 0 <= row["score"] <= 1
    assert (rows["C.jpg"]["verdict"], rows["C.jpg"]["verdict_source"], rows["C.jpg"]["confidence"]) == (
        "fake", "provenance", None)
    assert rows["C.jpg"]["provenance"]["summary"] == "AI: Content Credentials"
    assert rows["C.jpg"]["provenance"]["c2pa"]["state"] == "untrusted"
    assert (rows["a1111.png"]["verdict"], rows["a1111.png"]["verdict_source"]) == ("fake", "provenance")
    assert rows["A.jpg"]["verdict_source"] == "model" and rows["A.jpg"]["confidence"] is not None
    text = CliRunner().invoke(score_command, [str(folder / "C.jpg"), "--model", str(tiny_model_path)])
    path, verdict, score, source, evidence = text.stdout.strip().split("\t")
    assert (Path(path).name, verdict, source, evidence) == ("C.jpg", "fake", "provenance", "AI: Content Credentials")
    assert 0 <= float(score) <= 1


@pytest.mark.parametrize(("name", "summary"), [
    ("C.jpg", "AI: Content Credentials"),
    ("CA.jpg", "Content Credentials signed by C2PA Signer (C2PA Test Signing Cert), not in your trust list; "
               "Edited: c2pa.color_adjustments"),
    ("XCA.jpg", "Invalid Content Credentials (assertion.dataHash.mismatch): claimed signer C2PA Signer "
                "(C2PA Test Signing Cert), not verified; Edited: c2pa.color_adjustments"),
    ("A.jpg", "Edited: Adobe Lightroom; Capture: Canon EOS REBEL T3 (unsigned EXIF)"),
])
def test_the_one_line_summary_puts_the_strongest_evidence_first(name: str, summary: str) -> None:
    assert provenance_summary(read_image_provenance(fixture(name), isolated_settings())) == summary


def test_an_invalid_manifest_that_claims_ai_says_so_in_its_summary() -> None:
    stored = {"c2pa": {"state": "invalid", "summary": "invalid Content Credentials (claimSignature.mismatch)"},
              "signals": [{"kind": "c2pa_source_type", "says": "ai", "detail": "Content Credentials: ...",
                           "source": "c2pa"}]}
    assert provenance_summary(stored).startswith("AI claimed by invalid Content Credentials (not verified)")
    assert provenance_summary(None) == "" and provenance_summary({"c2pa": None, "signals": []}) == ""
