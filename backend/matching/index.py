"""An in-memory index of PDQ hashes answering "which stored images are within distance D of this hash".

The database holds every hash and stays the source of truth: a process builds its index from the database's rows
when it starts (`rebuild`) and adds each image as it arrives (`add`). Nothing here reads settings or the database;
thresholds are arguments.

The index is faiss's exhaustive binary index (IndexBinaryFlat behind an IndexBinaryIDMap for the caller's ids), the
kind ThreatExchange's PDQ index started with. Chosen by `benchmarks/matching.py` at a million hashes on this
project's two shared cores: a lookup costs 4 ms of CPU (p95 6 ms), 38 MB in all, built from a million rows in under
2 s; its wall-clock p95 was 6 ms at a load average of 4.6, 20 ms at 6, and passed 20 ms only when the machine was
further oversubscribed. faiss's multi-hash index (16 tables of 16 bits, one flipped bit: exact within 31) took half
the CPU per lookup, but 300 MB more in every process that holds one, longer builds, an answer exact only up to the
distance it was built for, and no way to remove an id. A flat scan is exact at any distance.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from backend.matching.pdq import HASH_BITS, HASH_BYTES, MATCH_DISTANCE, MIN_QUALITY, PdqHash, hex_to_bytes

# A database row: (image id, PDQ hex, quality or None when unknown).
HashRow = tuple[int, str, int | None]
# Rows are handed to faiss this many at a time, so a rebuild from a million rows never holds them all as Python
# objects at once.
_CHUNK = 65_536


@dataclass(frozen=True, order=True)
class Match:
    """A stored hash near the one looked up; ordered nearest first, then by id."""

    distance: int
    id: int


class NearDuplicateIndex:
    """Stored PDQ hashes keyed by the caller's integer ids (image rows), with exact range lookups.

    Hashes under ``min_quality`` are neither stored nor looked up: a flat or tiny image's hash is close to many
    unrelated ones. Safe to share between threads: one lock serialises lookups and changes (a lookup at a million
    hashes takes milliseconds).

    ``threads`` sets faiss's OpenMP threads for every lookup (faiss has no per-index setting). One lookup is a
    memory-bound scan, and on two shared cores two OpenMP threads made it ten times slower than one (p50 56 ms
    against 2.5 ms), so the default is 1; None leaves faiss's setting alone. It is set again on each lookup, in the
    calling thread: OpenMP's thread count is per thread, so a setting made in the thread that built the index does
    not reach an API's request threads, which then scanned with two spinning threads (a cached re-check spent a
    third of its time there).
    """

    def __init__(self, *, max_distance: int = MATCH_DISTANCE, min_quality: int = MIN_QUALITY,
                 threads: int | None = 1) -> None:
        if not 0 <= max_distance <= HASH_BITS:
            raise ValueError(f"max_distance must be between 0 and {HASH_BITS}, not {max_distance}")
        self.max_distance = max_distance
        self.min_quality = min_quality
        self.threads = threads
        self._use_threads()
        self._lock = threading.Lock()
        self._index = _empty_index()

    @classmethod
    def from_rows(cls, rows: Iterable[HashRow], *, max_distance: int = MATCH_DISTANCE,
                  min_quality: int = MIN_QUALITY, threads: int | None = 1) -> NearDuplicateIndex:
        index = cls(max_distance=max_distance, min_quality=min_quality, threads=threads)
        index.rebuild(rows)
        return index

    def _use_threads(self) -> None:
        if self.threads is not None and faiss.omp_get_max_threads() != self.threads:
            faiss.omp_set_num_threads(self.threads)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def memory_bytes(self) -> int:
        """What the stored hashes take: 32 bytes of hash and 8 of id each."""
        return len(self) * (HASH_BYTES + 8)

    def rebuild(self, rows: Iterable[HashRow]) -> int:
        """Replace everything stored with ``rows``; returns how many were stored. Lookups made meanwhile see the
        old contents, so a process can resynchronise with the database while it serves."""
        fresh = _empty_index()
        stored = _add_rows(fresh, rows, self.min_quality)
        with self._lock:
            self._index = fresh
        return stored

    def add(self, image_id: int, pdq: PdqHash) -> bool:
        """Store one image's hash; False when its quality keeps it out. Adding an id again stores a second row,
        which lookups fold into one match."""
        if not pdq.is_matchable(self.min_quality):
            return False
        code = np.frombuffer(hex_to_bytes(pdq.hex), dtype=np.uint8).reshape(1, HASH_BYTES)
        with self._lock:
            self._index.add_with_ids(code, np.array([image_id], dtype=np.int64))
        return True

    def add_many(self, rows: Iterable[HashRow]) -> int:
        """Store many rows at once (an import, a backfill); returns how many were stored."""
        with self._lock:
            return _add_rows(self._index, rows, self.min_quality)

    def remove(self, image_ids: Iterable[int]) -> int:
        """Forget these ids (a purged image); returns how many rows went. A flat index compacts its storage, so
        this costs a full pass: fine for a purge, not for every request."""
        ids = np.fromiter(image_ids, dtype=np.int64)
        if not len(ids):
            return 0
        with self._lock:
            return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def query(self, pdq: PdqHash, *, max_distance: int | None = None) -> list[Match]:
        """Stored images within ``max_distance`` (the index's own by default) of this hash, nearest first; none for
        a hash whose quality keeps it out."""
        return self.query_many([pdq], max_distance=max_distance)[0]

    def query_many(self, hashes: Sequence[PdqHash], *, max_distance: int | None = None) -> list[list[Match]]:
        """`query` for many hashes in one pass over the index, answers in the same order."""
        limit = self.max_distance if max_distance is None else max_distance
        asked = [i for i, pdq in enumerate(hashes) if pdq.is_matchable(self.min_quality)]
        answers: list[list[Match]] = [[] for _ in hashes]
        if not asked or limit < 0:
            return answers
        codes = np.frombuffer(b"".join(hex_to_bytes(hashes[i].hex) for i in asked), dtype=np.uint8)
        with self._lock:
            self._use_threads()
            # faiss keeps distances strictly below the radius.
            limits, distances, ids = self._index.range_search(codes.reshape(-1, HASH_BYTES), limit + 1)
        for row, i in enumerate(asked):
            answers[i] = _fold(ids[limits[row]: limits[row + 1]], distances[limits[row]: limits[row + 1]])
        return answers


def _empty_index() -> faiss.IndexBinaryIDMap:
    return faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(HASH_BITS))


def _add_rows(index: faiss.IndexBinaryIDMap, rows: Iterable[HashRow], min_quality: int) -> int:
    stored = 0
    ids: list[int] = []
    codes: list[bytes] = []
    for image_id, pdq_hex, quality in rows:
        if quality is not None and quality < min_quality:
            continue
        try:
            codes.append(hex_to_bytes(pdq_hex))
        except ValueError as exc:
            raise ValueError(f"image {image_id}: {exc}") from exc
        ids.append(image_id)
        if len(ids) == _CHUNK:
            stored += _flush(index, ids, codes)
    return stored + _flush(index, ids, codes)


def _flush(index: faiss.IndexBinaryIDMap, ids: list[int], codes: list[bytes]) -> int:
    count = len(ids)
    if count:
        array = np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(count, HASH_BYTES)
        index.add_with_ids(array, np.array(ids, dtype=np.int64))
        ids.clear()
        codes.clear()
    return count


def _fold(ids: np.ndarray, distances: np.ndarray) -> list[Match]:
    """One match per id (its nearest row), nearest first."""
    nearest: dict[int, int] = {}
    for image_id, distance in zip(ids.tolist(), distances.tolist(), strict=True):
        distance = int(distance)
        if image_id not in nearest or distance < nearest[image_id]:
            nearest[image_id] = distance
    return sorted(Match(distance, image_id) for image_id, distance in nearest.items())
