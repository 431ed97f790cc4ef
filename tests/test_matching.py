"""Near-duplicate matching in the product: hashes at intake, the match at scoring (rule 3), the bulk resolve of
waiting near-copies and its undo, the matches endpoint, hash lists in and out, and the low-quality guard.

Photos here are ones no other test submits (skimage's immunohistochemistry, hubble_deep_field, retina,
motorcycle), so a label given here can never match another test's image on the shared stacks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from flask.testing import FlaskClient
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.batches.results import format_results, iter_results
from backend.checks.served import served_check
from backend.checks.service import claim_checks, get_check, record_score, store_image, submit_image
from backend.matching import lookups
from backend.matching.lookups import match_for_image, match_index
from backend.matching.pdq import PdqHash
from backend.moderation.reviews import QueueFilters, label_image, queue_size, review_queue, undo_last_decision
from backend.settings import Settings
from backend.shapes import CheckOut
from backend.storage.db import session_scope
from backend.storage.migrate import upgrade_database
from backend.storage.schema import Batch, Image, ListedHash, ModelVersion, Review
from fakewatch.cli import cli
from testbed.stack import Stack
from tests.actors import as_user
from tests.test_admin import add_moderator, logged_in, register_test_model, texts
from worker.scoring import _labelled_matches

MODERATOR = "mona"


def photo(name: str, size: int = 384) -> PILImage.Image:
    import skimage.data  # noqa: PLC0415 - seconds to import

    return PILImage.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((size, size))


def encoded(image: PILImage.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" and not options else options))
    return buffer.getvalue()


def half_size(image: PILImage.Image) -> bytes:
    return encoded(image.resize((image.width // 2, image.height // 2), PILImage.Resampling.BICUBIC))


def jpeg_60(image: PILImage.Image) -> bytes:
    return encoded(image, quality=60)


def scored_as_the_worker_does(settings: Settings, data: bytes, score: float) -> str:
    """Submit bytes, then record a fixed model score with the match the worker looks up (worker/scoring.py)."""
    with session_scope(settings) as session:
        submission = submit_image(session, data, settings)
        check_id = submission.check.id
        needs_scoring = submission.needs_scoring
    if needs_scoring:
        with session_scope(settings) as session:
            [check] = claim_checks(session, [check_id], stale_after_s=60)
            version = session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).one()
            record_score(check, version, score, match=match_for_image(session, settings, check.image))
    return check_id


def shown(settings: Settings, check_id: str) -> dict[str, Any]:
    with session_scope(settings) as session:
        body: dict[str, Any] = CheckOut().dump(served_check(session, get_check(session, check_id)))
        return body


def image_of(settings: Settings, check_id: str) -> int:
    with session_scope(settings) as session:
        image_id = get_check(session, check_id).image_id
        assert image_id is not None
        return image_id


@pytest.fixture
def scored_db(any_database: Settings) -> Settings:
    """A migrated database on each dialect with a metadata-only model (threshold 0.5, band 0.1) active."""
    register_test_model(any_database)
    return any_database


# --- through the real API and worker, on both backends ---------------------------------------------------------


def test_a_labelled_fakes_half_size_copy_comes_back_fake_by_match(stack: Stack) -> None:
    original = photo("immunohistochemistry")
    first = stack.post_image(encoded(original), wait=30).json()
    assert first["status"] == "done", first
    with stack.session() as session:
        image_id = image_of(stack.settings, first["id"])
        label_image(session, image_id, "fake", as_user(MODERATOR))

    copy = stack.post_image(half_size(original), wait=30).json()
    assert copy["status"] == "done", copy
    assert copy["verdict"] == "fake" and copy["verdict_source"] == "match" and copy["flagged"] is True
    assert copy["score"] is not None and copy["confidence"] is None  # the model's score is still shown
    match = copy["match"]
    assert match["sha256"] == first["image"]["sha256"] and match["label"] == "fake" and match["by"] == MODERATOR
    assert 0 <= match["distance"] <= 31 and match["at"].endswith("Z")

    # The same copy again is answered from the score cache by the API process itself, with its own index.
    again = stack.post_image(half_size(original), wait=30).json()
    assert again["cached"] is True and again["verdict_source"] == "match" and again["verdict"] == "fake"

    listed = stack_get(stack, f"/api/v1/images/{first['image']['sha256']}/matches")
    assert listed["matchable"] is True and listed["max_distance"] == 31
    [seen] = listed["copies"]
    assert seen["sha256"] == copy["image"]["sha256"] and seen["distance"] == match["distance"]
    assert seen["checks"] == 2 and seen["sources"] == ["upload"]

    # `fakewatch check` says what the console's evidence line says: how near, and who labelled the original.
    copy_file = stack.data_dir / "half-size-copy.png"
    copy_file.write_bytes(half_size(original))
    checked = subprocess.run([sys.executable, "-m", "fakewatch.cli", "check", str(copy_file)], check=False,
                             env={**os.environ, **stack.env, "FAKEWATCH_API_URL": stack.api_url,
                                  "FAKEWATCH_API_KEY": stack.api_key}, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    assert f"AI traces found (by match: near-copy (distance {match['distance']}) of image {first['image']['sha256'][:12]}" \
        in checked.stdout and f"labelled fake by {MODERATOR} at {match['at']}" in checked.stdout, checked.stdout


def stack_get(stack: Stack, path: str) -> Any:
    response = requests.get(stack.api_url + path, headers=stack.headers(), timeout=30)
    response.raise_for_status()
    return response.json()


# --- rule 3 with the worker's lookup, on both dialects -------------------------------------------------------


def test_a_labelled_reals_copy_is_real_only_when_the_model_agrees(scored_db: Settings) -> None:
    original = photo("retina")
    first = scored_as_the_worker_does(scored_db, encoded(original), 0.2)
    with session_scope(scored_db) as session:
        label_image(session, image_of(scored_db, first), "real", as_user(MODERATOR))

    agreed = shown(scored_db, scored_as_the_worker_does(scored_db, half_size(original), 0.1))
    assert (agreed["verdict"], agreed["verdict_source"], agreed["flagged"]) == ("real", "match", False)
    # A real label never clears a copy the model calls fake (a face swap of a cleared photo is a near-copy).
    doubted = shown(scored_db, scored_as_the_worker_does(scored_db, jpeg_60(original), 0.95))
    assert (doubted["verdict"], doubted["verdict_source"], doubted["flagged"]) == ("uncertain", "match", True)
    assert doubted["match"]["label"] == "real"


def test_low_quality_hashes_never_match(scored_db: Settings) -> None:
    flat = PILImage.new("RGB", (256, 256), (120, 120, 120))
    with session_scope(scored_db) as session:
        labelled = store_image(session, encoded(flat, "PNG"), scored_db)
        assert labelled.pdq_hex is not None and (labelled.pdq_quality or 0) < scored_db.match_min_quality
        label_image(session, labelled.id, "fake", as_user(MODERATOR))
    # Another flat image hashes within a few bits of it, yet it is neither stored in the index nor looked up.
    other = scored_as_the_worker_does(scored_db, encoded(PILImage.new("RGB", (300, 200), (121, 121, 121)), "PNG"), 0.2)
    body = shown(scored_db, other)
    assert body["match"] is None and body["verdict_source"] == "model" and body["verdict"] == "real"
    # A tiny copy of a real photo gets quality 0 (its hash no longer follows the image): it never matches either.
    original = photo("hubble_deep_field")
    first = scored_as_the_worker_does(scored_db, encoded(original), 0.2)
    with session_scope(scored_db) as session:
        label_image(session, image_of(scored_db, first), "fake", as_user(MODERATOR))
        tiny = store_image(session, encoded(original.resize((24, 24))), scored_db)
        assert tiny.pdq_quality == 0 and match_for_image(session, scored_db, tiny) is None
        big = store_image(session, half_size(original), scored_db)
        assert match_for_image(session, scored_db, big) is not None  # the guard is not what keeps copies apart


# --- the review queue: one card per group of copies, resolved together, undone together ------------------------


def test_labelling_resolves_waiting_copies_in_one_decision_and_undo_takes_them_back(scored_db: Settings) -> None:
    original = photo("immunohistochemistry")
    base = scored_as_the_worker_does(scored_db, encoded(original), 0.9)      # fake
    fake_copy = scored_as_the_worker_does(scored_db, half_size(original), 0.92)  # fake
    unsure_copy = scored_as_the_worker_does(scored_db, jpeg_60(original), 0.55)  # uncertain
    other = scored_as_the_worker_does(scored_db, encoded(photo("retina")), 0.9)
    ids = {name: image_of(scored_db, check) for name, check in
           (("base", base), ("fake_copy", fake_copy), ("unsure_copy", unsure_copy), ("other", other))}

    with session_scope(scored_db) as session:
        cards = review_queue(session)
        assert [card.image_id for card in cards] == [ids["base"], ids["other"]]
        assert set(cards[0].copies) == {ids["fake_copy"], ids["unsure_copy"]} and cards[1].copies == ()
        assert queue_size(session) == 4  # images waiting; the cards fold them
        assert [c.image_id for c in review_queue(session, copies=None)] == list(ids.values())

        decision = label_image(session, ids["base"], "fake", as_user(MODERATOR), reason="face swap")
        assert {c.image_id for c in decision.copies} == {ids["fake_copy"], ids["unsure_copy"]}
        assert all(c.matched_image_id == ids["base"] and 0 <= c.distance <= 31 for c in decision.copies)
        assert [card.image_id for card in review_queue(session)] == [ids["other"]]
        rows = {r.image_id: r for r in session.scalars(select(Review))}
        assert rows[ids["fake_copy"]].matched_image_id == ids["base"] and rows[ids["base"]].matched_image_id is None
        assert rows[ids["unsure_copy"]].match_distance is not None and rows[ids["unsure_copy"]].label == "fake"
        assert {row.reason for row in rows.values()} == {"face swap"}, "copies carry the decision's reason"
    assert shown(scored_db, unsure_copy)["review"]["label"] == "fake"

    with session_scope(scored_db) as session:
        undone = undo_last_decision(session, as_user(MODERATOR))
        assert undone is not None and set(undone.image_ids) == set(ids.values()) - {ids["other"]}
        assert len(undone.copies) == 2 and session.scalar(select(Review).limit(1)) is None
        assert [card.image_id for card in review_queue(session)] == [ids["base"], ids["other"]]

        # A real label resolves only the copies the model was unsure of, never one it called fake.
        real = label_image(session, ids["base"], "real", as_user(MODERATOR))
        assert [c.image_id for c in real.copies] == [ids["unsure_copy"]]
        assert [card.image_id for card in review_queue(session, QueueFilters())] == [ids["fake_copy"], ids["other"]]


def test_a_copy_decided_fake_by_a_match_stays_out_of_the_queue(scored_db: Settings) -> None:
    original = photo("hubble_deep_field")
    base = scored_as_the_worker_does(scored_db, encoded(original), 0.9)
    with session_scope(scored_db) as session:
        label_image(session, image_of(scored_db, base), "fake", as_user(MODERATOR))
    copy = scored_as_the_worker_does(scored_db, half_size(original), 0.2)  # the model would clear it
    body = shown(scored_db, copy)
    assert (body["verdict"], body["verdict_source"], body["flagged"]) == ("fake", "match", True)
    with session_scope(scored_db) as session:
        assert review_queue(session) == [] and queue_size(session) == 0


# --- the matches endpoint ------------------------------------------------------------------------------------


def test_matches_endpoint_lists_copies_and_refuses_bad_names(client: FlaskClient, auth_headers: dict[str, str],
                                                             database: Settings) -> None:
    original = photo("retina")
    with session_scope(database) as session:
        first = store_image(session, encoded(original), database)
        store_image(session, half_size(original), database)
        store_image(session, encoded(photo("hubble_deep_field")), database)
        sha256 = first.sha256
    body = client.get(f"/api/v1/images/{sha256}/matches", headers=auth_headers).get_json()
    assert body["sha256"] == sha256 and body["matchable"] is True and len(body["pdq_hex"]) == 64
    assert len(body["copies"]) == 1 and body["copies"][0]["distance"] <= 31 and body["listed"] == []
    assert client.get("/api/v1/images/nothex/matches", headers=auth_headers).get_json()["error"]["code"] == \
        "invalid_request"
    missing = client.get(f"/api/v1/images/{'0' * 64}/matches", headers=auth_headers)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    assert client.get(f"/api/v1/images/{sha256}/matches").status_code == 401
    spec = client.get("/api/openapi.json").get_json()
    assert "ImageMatchesOut" in spec["components"]["schemas"] and "/api/v1/images/{sha256}/matches" in spec["paths"]


# --- hash lists in and out, and the backfill ------------------------------------------------------------------


def test_hash_lists_round_trip_and_imported_hashes_match_like_labels(scored_db: Settings, tmp_path: Path) -> None:
    original = photo("immunohistochemistry")
    with session_scope(scored_db) as session:
        labelled = store_image(session, encoded(original), scored_db)
        label_image(session, labelled.id, "fake", as_user(MODERATOR), note="a case name")
        labelled_hex = labelled.pdq_hex
    runner = CliRunner()
    exported = tmp_path / "ours.csv"
    result = runner.invoke(cli, ["hashes", "export", "--out", str(exported)], obj=scored_db)
    assert result.exit_code == 0, result.output
    assert exported.read_text().splitlines() == ["pdq_hex,label,note", f"{labelled_hex},fake,"]

    # Another installation takes the list in; a copy there matches it with no image of the original stored.
    theirs = scored_db.model_copy(update={"data_dir": tmp_path / "theirs", "database_url": ""})
    upgrade_database(theirs.database)
    register_test_model(theirs)
    shared = tmp_path / "shared.csv"
    shared.write_text(exported.read_text() + f"{'ab' * 32},,unlabelled row\nnot-a-hash,fake,\n")
    result = runner.invoke(cli, ["hashes", "import", str(shared), "--label", "real", "--by", "partner"], obj=theirs)
    assert result.exit_code == 0, result.output
    assert "Imported 2 new hash(es), 0 relabelled, 0 unchanged, 1 row(s) left out." in result.output
    again = runner.invoke(cli, ["hashes", "import", str(shared), "--label", "fake"], obj=theirs)
    assert "0 new hash(es), 1 relabelled, 1 unchanged" in again.output  # the unlabelled row takes the new label
    copy = shown(theirs, scored_as_the_worker_does(theirs, half_size(original), 0.2))
    assert (copy["verdict"], copy["verdict_source"]) == ("fake", "match")
    assert copy["match"]["sha256"] is None and copy["match"]["pdq_hex"] == labelled_hex
    with session_scope(theirs) as session:
        assert {row.pdq_hex for row in session.scalars(select(ListedHash))} == {labelled_hex, "ab" * 32}

    round_trip = tmp_path / "back.csv"
    runner.invoke(cli, ["hashes", "export", "--out", str(round_trip)], obj=theirs)
    assert round_trip.read_text().splitlines() == ["pdq_hex,label,note", f"{labelled_hex},fake,",
                                                   f"{'ab' * 32},fake,unlabelled row"]
    with_notes = runner.invoke(cli, ["hashes", "export", "--notes"], obj=scored_db)
    assert f"{labelled_hex},fake,a case name" in with_notes.output


def test_backfill_hashes_images_stored_before_hashing(database: Settings) -> None:
    with session_scope(database) as session:
        image = store_image(session, encoded(photo("retina")), database)
        copy = store_image(session, half_size(photo("retina")), database)
        kept = image.pdq_hex
        for row in (image, copy):
            row.pdq_hex = row.pdq_quality = None
    result = CliRunner().invoke(cli, ["hashes", "backfill"], obj=database)
    assert result.exit_code == 0 and "Hashed 2 image(s); 0 could not be read." in result.output, result.output
    with session_scope(database) as session:
        assert session.scalars(select(Image.pdq_hex).where(Image.id == image.id)).one() == kept
        fresh = match_index(database.model_copy(update={"match_reload_s": 0.0}))
        stored = session.get(Image, copy.id)
        assert stored is not None and stored.pdq_hex is not None
        fresh.sync(session)
        assert len(fresh.index) == 2


def test_the_index_catches_up_with_rows_committed_out_of_order(database: Settings) -> None:
    index = match_index(database.model_copy(update={"match_reload_s": 3600.0}))
    originals = [photo("retina"), photo("hubble_deep_field")]
    with session_scope(database) as session:
        store_image(session, encoded(originals[0]), database)
        index.sync(session)
        assert len(index.index) == 1
        late = store_image(session, encoded(originals[1]), database)
        later = store_image(session, half_size(originals[0]), database)
        # A row whose transaction committed late sits under the highest id seen: it is still picked up once.
        index.index.remove([late.id])
        index._marks["image"] = later.id  # as if `later` had been seen before `late` committed
        index._recent["image"].add(later.id)
        index.index.add(later.id, PdqHash(later.pdq_hex or "", later.pdq_quality))
        index.sync(session)
        index.sync(session)
        assert len(index.index) == 3
        assert [m.id for m in index.index.query(PdqHash(late.pdq_hex or "", late.pdq_quality))] == [late.id]


def test_the_look_back_is_read_at_most_every_interval(database: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup reads only rows above the highest id seen; the recent rows under it (late commits) are read again
    at most every LOOKBACK_EVERY_S, since after a batch they are hundreds of rows on every lookup."""
    index = match_index(database.model_copy(update={"match_reload_s": 3600.0}))
    originals = [photo("retina"), photo("hubble_deep_field")]
    with session_scope(database) as session:
        store_image(session, encoded(originals[0]), database)
        index.sync(session)
        index.sync(session)  # the first catch-up reads the look-back
        late = store_image(session, encoded(originals[1]), database)
        later = store_image(session, half_size(originals[0]), database)
        index._marks["image"] = later.id  # as if `later` had been seen before `late` committed
        index._recent["image"].add(later.id)
        index.sync(session)
        assert late.id not in {m.id for m in index.index.query(PdqHash(late.pdq_hex or "", late.pdq_quality))}
        monkeypatch.setattr(lookups, "LOOKBACK_EVERY_S", 0.0)  # as if the interval had passed
        index.sync(session)
        assert [m.id for m in index.index.query(PdqHash(late.pdq_hex or "", late.pdq_quality))] == [late.id]


# --- batch results and the console ---------------------------------------------------------------------------


def test_batch_results_carry_the_match(scored_db: Settings) -> None:
    original = photo("retina")
    base = scored_as_the_worker_does(scored_db, encoded(original), 0.9)
    with session_scope(scored_db) as session:
        label_image(session, image_of(scored_db, base), "fake", as_user(MODERATOR))
    copy = scored_as_the_worker_does(scored_db, half_size(original), 0.2)
    with session_scope(scored_db) as session:
        batch = Batch(name="copies", total=1)
        session.add(batch)
        session.flush()
        get_check(session, copy).batch_id = batch.id
        batch_id = batch.id
        base_sha = get_check(session, base).image.sha256  # type: ignore[union-attr]
    with session_scope(scored_db) as session:
        [row] = list(iter_results(session, batch_id))
        csv_text = "".join(format_results(iter_results(session, batch_id), "csv"))
    assert (row["verdict"], row["verdict_source"], row["match_label"], row["match_sha256"]) == \
        ("fake", "match", "fake", base_sha)
    assert 0 <= row["match_distance"] <= 31 and "match_distance" in csv_text.splitlines()[0]


def test_console_folds_copies_into_one_card_and_lists_them_on_the_image_page(database: Settings) -> None:
    register_test_model(database)
    add_moderator(database)
    original = photo("hubble_deep_field")
    base = scored_as_the_worker_does(database, encoded(original), 0.9)
    copy = scored_as_the_worker_does(database, half_size(original), 0.8)
    at = logged_in(database)
    assert "**2** image(s) waiting" in texts(at) and "+ 1 near-copy waiting" in texts(at)
    at.button(key=f"fake_{image_of(database, base)}").click().run()
    assert not at.exception, at.exception
    assert "Labelled 2 image(s) fake, 1 of them as near-copies." in texts(at)
    assert "Nothing to review under these filters." in texts(at)
    with session_scope(database) as session:
        sha256 = get_check(session, base).image.sha256  # type: ignore[union-attr]
    at.query_params["sha256"] = sha256
    at.switch_page("views/image.py").run()
    assert not at.exception, at.exception
    assert "Copies seen (1)" in texts(at)
    [copies] = [frame.value for frame in at.dataframe if "distance" in frame.value.columns]
    assert copies["distance"].tolist()[0] <= 31 and copies["checks"].tolist() == [1]
    assert copies["sha256"].tolist() == [shown(database, copy)["image"]["sha256"]]


def test_a_chunk_reads_the_look_back_at_most_once_and_finds_what_each_lookup_would(
        database: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """worker/scoring.py looks up a chunk's images one by one; the recent rows under the index's mark (hundreds after
    a batch) are re-read at most once for the chunk, and the labelled copies found are those of single lookups."""
    register_test_model(database)
    original = photo("immunohistochemistry")
    labelled = scored_as_the_worker_does(database, encoded(original), 0.9)
    with session_scope(database) as session:
        label_image(session, image_of(database, labelled), "fake", as_user(MODERATOR))
        copies = [submit_image(session, data, database).check for data in
                  (half_size(original), jpeg_60(original), encoded(photo("coffee")))]
        session.commit()
        one_by_one = {check.image_id: match_for_image(session, database, check.image) for check in copies}
        look_backs: list[bool] = []
        real_rows = lookups._image_rows

        def counted_rows(session: Session, mark: int, look_back: bool = True) -> Iterator[lookups.HashRow]:
            look_backs.append(look_back)
            return real_rows(session, mark, look_back)

        monkeypatch.setattr(lookups, "_image_rows", counted_rows)
        chunked = _labelled_matches(session, copies, database)
    assert len(look_backs) == 3 and sum(look_backs) <= 1, look_backs
    assert chunked == one_by_one
    found = [match for match in chunked.values() if match is not None]
    assert len(found) == 2 and all(match.label == "fake" for match in found), "both copies; the coffee photo none"
