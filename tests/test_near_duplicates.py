"""PDQ hashes, the near-duplicate index and hash lists, on photos that ship in skimage and scikit-learn."""

from __future__ import annotations

import io
import itertools
import threading

import faiss
import numpy as np
import pdqhash
import pytest
from PIL import Image

from backend.matching.index import Match, NearDuplicateIndex
from backend.matching.lists import HashListEntry, parse_hash_list, write_hash_list
from backend.matching.pdq import (
    MATCH_DISTANCE,
    PdqHash,
    bits_to_hex,
    hamming_distance,
    hash_image,
    hex_to_bytes,
    normalize_hex,
)

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")
ZERO = "0" * 64


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    import skimage.data  # noqa: PLC0415 - seconds to import
    from sklearn.datasets import load_sample_images  # noqa: PLC0415

    out = {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTO_NAMES}
    samples = load_sample_images()
    out.update({f"sklearn-{i}": Image.fromarray(image) for i, image in enumerate(samples.images)})
    return out


def reencoded(image: Image.Image, fmt: str, **options: object) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def copies_of(image: Image.Image) -> dict[str, Image.Image]:
    width, height = image.size
    return {
        "half size": image.resize((width // 2, height // 2), Image.Resampling.BICUBIC),
        "JPEG 60": reencoded(image, "JPEG", quality=60),
        "screenshot": reencoded(image.resize((int(width * 0.8), int(height * 0.8)), Image.Resampling.BILINEAR),
                                "PNG"),
        "half size, JPEG 75": reencoded(image.resize((width // 2, height // 2)), "JPEG", quality=75),
    }


def one_bit_set(position: int) -> str:
    bits = np.zeros(256, dtype=np.uint8)
    bits[position] = 1
    return bits_to_hex(bits)


def flipped(pdq_hex: str, count: int, start: int = 0) -> str:
    """A hash ``count`` bits away from ``pdq_hex``."""
    bits = np.unpackbits(np.frombuffer(hex_to_bytes(pdq_hex), dtype=np.uint8))
    bits[start : start + count] ^= 1
    return bits_to_hex(bits)


# --- hashes -----------------------------------------------------------------------------------------------------


def test_resized_and_recompressed_copies_stay_within_31(photos: dict[str, Image.Image]) -> None:
    for name, photo in photos.items():
        original = hash_image(photo)
        assert original.is_matchable(), name
        for kind, copy in copies_of(photo).items():
            distance = hamming_distance(original.hex, hash_image(copy).hex)
            assert distance <= MATCH_DISTANCE, f"{name}, {kind}: {distance}"


def test_unrelated_photos_are_far_apart(photos: dict[str, Image.Image]) -> None:
    hashes = {name: hash_image(photo).hex for name, photo in photos.items()}
    for (a, hash_a), (b, hash_b) in itertools.combinations(hashes.items(), 2):
        assert hamming_distance(hash_a, hash_b) > MATCH_DISTANCE, (a, b)


def test_hex_is_threatexchange_spelling() -> None:
    """The first bit is the highest bit of the first digit, so lists from HMA and ThreatExchange compare as is."""
    assert one_bit_set(0) == "8" + "0" * 63
    assert one_bit_set(255) == "0" * 63 + "1"
    bits = np.random.default_rng(1).integers(0, 2, 256)
    assert bits_to_hex(bits) == f"{int(''.join(map(str, bits)), 2):064x}"


def test_hex_validation_and_distance() -> None:
    assert normalize_hex("  " + "AB" * 32 + "\n") == "ab" * 32
    for bad in ("", "ab" * 31, "ab" * 33, "g" * 64, "0x" + "0" * 62):
        with pytest.raises(ValueError):
            normalize_hex(bad)
    with pytest.raises(ValueError):
        PdqHash("AB" * 32, 100)  # stored hashes are in the one lowercase spelling
    assert hamming_distance(ZERO, ZERO) == 0
    assert hamming_distance(ZERO, "f" * 64) == 256
    assert hamming_distance(ZERO, one_bit_set(7)) == 1


def test_a_flat_image_is_never_matched(photos: dict[str, Image.Image]) -> None:
    flat = Image.new("RGB", (300, 200), (120, 130, 140))
    gradient = Image.fromarray(np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1))).convert("RGB")
    index = NearDuplicateIndex()
    for image in (flat, gradient):
        pdq = hash_image(image)
        assert not pdq.is_matchable(), pdq.quality
        assert not index.add(1, pdq)
        assert index.query(pdq, max_distance=256) == []
    assert len(index) == 0
    assert index.add(2, hash_image(photos["astronaut"]))
    assert index.query(hash_image(flat), max_distance=256) == []  # a flat image's lookup asks nothing


def test_a_tiny_image_is_never_matched(photos: dict[str, Image.Image]) -> None:
    thumbnail = photos["astronaut"].resize((16, 16))
    # PDQ alone rates the upsampled blur as full quality: the size floor is what keeps it out.
    assert pdqhash.compute(np.asarray(thumbnail))[1] == 100
    pdq = hash_image(thumbnail)
    assert pdq.quality == 0 and not pdq.is_matchable()
    index = NearDuplicateIndex.from_rows([(1, hash_image(photos["astronaut"]).hex, 100)])
    assert index.query(pdq, max_distance=256) == []
    assert hash_image(photos["astronaut"].resize((64, 64))).is_matchable()
    assert hash_image(thumbnail, min_side=8).is_matchable()


def test_large_photos_hash_as_their_copies_do(photos: dict[str, Image.Image]) -> None:
    """A photo over 1024 px is averaged down before hashing; its hash stays close to the whole photo's."""
    large = photos["astronaut"].resize((1536, 1536), Image.Resampling.BICUBIC)
    whole = bits_to_hex(pdqhash.compute(np.asarray(large))[0])
    assert hamming_distance(hash_image(large).hex, whole) <= 16
    assert hamming_distance(hash_image(large).hex, hash_image(photos["astronaut"]).hex) <= MATCH_DISTANCE


def test_other_modes_are_hashed_as_rgb(photos: dict[str, Image.Image]) -> None:
    photo = photos["coffee"]
    assert hamming_distance(hash_image(photo).hex, hash_image(photo.convert("RGBA")).hex) == 0
    assert hamming_distance(hash_image(photo).hex, hash_image(photo.convert("L")).hex) <= MATCH_DISTANCE


# --- the index --------------------------------------------------------------------------------------------------


def test_a_copy_finds_its_original_among_others(photos: dict[str, Image.Image]) -> None:
    names = list(photos)
    index = NearDuplicateIndex.from_rows((i, hash_image(photos[name]).hex, 100) for i, name in enumerate(names))
    assert len(index) == len(names)
    for i, name in enumerate(names):
        for kind, copy in copies_of(photos[name]).items():
            found = index.query(hash_image(copy))
            assert [m.id for m in found] == [i], f"{name}, {kind}: {found}"


def test_query_returns_ids_nearest_first_within_the_distance() -> None:
    base = bits_to_hex(np.random.default_rng(2).integers(0, 2, 256))
    index = NearDuplicateIndex()
    for image_id, distance in ((10, 20), (11, 0), (12, 31), (13, 32), (14, 5), (15, 5)):
        assert index.add(image_id, PdqHash(flipped(base, distance), 90))
    query = PdqHash(base, 90)
    assert index.query(query) == [Match(0, 11), Match(5, 14), Match(5, 15), Match(20, 10), Match(31, 12)]
    assert [m.id for m in index.query(query, max_distance=5)] == [11, 14, 15]
    assert [m.id for m in index.query(query, max_distance=40)][-1] == 13
    assert index.query(PdqHash(flipped(base, 128), 90)) == []
    assert NearDuplicateIndex(max_distance=0).query(query) == []


def test_a_lookup_from_another_thread_scans_with_one_openmp_thread() -> None:
    """OpenMP's thread count is per thread: an API's request threads must not scan with faiss's default (every
    core, spinning), whichever thread built the index."""
    index = NearDuplicateIndex()
    index.add(1, PdqHash(flipped(ZERO, 4), 90))
    seen: list[tuple[int, list[Match]]] = []

    def lookup() -> None:
        faiss.omp_set_num_threads(4)  # what a fresh thread may start with
        found = index.query(PdqHash(ZERO, 90))
        seen.append((faiss.omp_get_max_threads(), found))

    thread = threading.Thread(target=lookup)
    thread.start()
    thread.join()
    assert seen == [(1, [Match(4, 1)])]


def test_an_id_added_twice_is_one_match_at_its_nearest() -> None:
    index = NearDuplicateIndex()
    index.add(7, PdqHash(flipped(ZERO, 12), 80))
    index.add(7, PdqHash(flipped(ZERO, 3), 80))
    assert index.query(PdqHash(ZERO, 80)) == [Match(3, 7)]


def test_rebuild_replaces_and_add_keeps_current() -> None:
    rows = [(1, flipped(ZERO, 1), 100), (2, flipped(ZERO, 2, start=100), 100), (3, flipped(ZERO, 3), 10)]
    index = NearDuplicateIndex.from_rows(rows)
    assert len(index) == 2  # row 3 is under the quality floor
    assert [m.id for m in index.query(PdqHash(ZERO, None))] == [1, 2]
    index.add(4, PdqHash(ZERO, 100))
    assert [m.id for m in index.query(PdqHash(ZERO, None))] == [4, 1, 2]
    assert index.rebuild([(5, ZERO, None)]) == 1  # unknown quality: a shared list's hash
    assert [m.id for m in index.query(PdqHash(ZERO, None))] == [5]
    assert index.add_many([(6, ZERO, 60), (7, ZERO, 49)]) == 1
    assert index.remove([5, 99]) == 1
    assert [m.id for m in index.query(PdqHash(ZERO, None))] == [6]
    assert index.remove([]) == 0


def test_query_many_answers_in_order_and_skips_low_quality() -> None:
    far = "f" * 64
    index = NearDuplicateIndex.from_rows([(1, ZERO, 100), (2, far, 100)])
    answers = index.query_many([PdqHash(far, 100), PdqHash(ZERO, 3), PdqHash(ZERO, 100)])
    assert answers == [[Match(0, 2)], [], [Match(0, 1)]]
    assert index.query_many([]) == []


def test_bad_rows_and_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="image 9"):
        NearDuplicateIndex.from_rows([(9, "zz", 100)])
    with pytest.raises(ValueError):
        NearDuplicateIndex(max_distance=257)


def test_the_index_holds_40_bytes_a_hash() -> None:
    index = NearDuplicateIndex.from_rows((i, flipped(ZERO, i % 256), 100) for i in range(1000))
    assert len(index) == 1000 and index.memory_bytes == 40_000


# --- hash lists -------------------------------------------------------------------------------------------------


def test_hash_list_round_trip() -> None:
    entries = [HashListEntry(flipped(ZERO, 1), "fake", "face swap, from a news photo"),
               HashListEntry(flipped(ZERO, 2), "real", 'quoted "note"\nover two lines'),
               HashListEntry(ZERO, "fake", "")]
    out = io.StringIO(newline="")
    assert write_hash_list(entries, out) == 3
    assert out.getvalue().startswith("pdq_hex,label,note\n")
    parsed = parse_hash_list(out.getvalue())
    assert parsed.entries == entries and parsed.invalid == []


def test_hash_list_reports_bad_rows_by_line() -> None:
    good = flipped(ZERO, 4)
    text = "\n".join([
        "pdq_hex,label,note",
        f"{good},fake,first",
        "not-hex,fake,",
        f"{good[:-2]},fake,",
        f"{flipped(ZERO, 5)},maybe,",
        f"{flipped(ZERO, 6)},,no label",
        "",
        f"{good.upper()},real,again",
        f"{flipped(ZERO, 7)},REAL,",
    ])
    parsed = parse_hash_list(text)
    assert [e.pdq_hex for e in parsed.entries] == [good, flipped(ZERO, 7)]
    assert parsed.entries[1].label == "real"
    assert [(row.line, row.value) for row in parsed.invalid] == [
        (3, "not-hex"), (4, good[:-2]), (5, "maybe"), (6, flipped(ZERO, 6)), (8, good)]
    reasons = [row.reason for row in parsed.invalid]
    assert "hex digits" in reasons[0] and "62" in reasons[1] and "unknown label 'maybe'" in reasons[2]
    assert "no label" in reasons[3] and reasons[4] == "the same hash is on line 2, labelled fake"
    assert parsed.invalid_count == 5
    assert parsed.invalid[0].as_dict() == {"line": 3, "value": "not-hex", "reason": reasons[0]}


def test_hash_list_without_header_takes_the_importers_label() -> None:
    text = "\ufeff" + f"{flipped(ZERO, 1)}\n{flipped(ZERO, 2)},real\n{flipped(ZERO, 3)},fake,a note\n"
    parsed = parse_hash_list(text, label="fake")
    assert [(e.label, e.note) for e in parsed.entries] == [("fake", ""), ("real", ""), ("fake", "a note")]
    with pytest.raises(ValueError):
        parse_hash_list(text, label="maybe")


def test_hash_list_header_may_reorder_and_add_columns() -> None:
    text = f"note,source,PDQ_HEX,label\n\"a, b\",hma,{flipped(ZERO, 9)},fake\n"
    parsed = parse_hash_list(text)
    assert parsed.entries == [HashListEntry(flipped(ZERO, 9), "fake", "a, b")]


def test_hash_list_line_numbers_count_multiline_notes() -> None:
    text = f'pdq_hex,label,note\n{ZERO},fake,"two\nlines"\nbad,fake,\n'
    assert [row.line for row in parse_hash_list(text).invalid] == [4]


def test_hash_list_refuses_overlong_notes() -> None:
    parsed = parse_hash_list(f"{ZERO},fake,{'x' * 501}\n")
    assert parsed.entries == [] and "501 characters" in parsed.invalid[0].reason
