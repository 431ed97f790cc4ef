"""The typed records that cross module boundaries (core/retraining.py, core/check_evidence.py) keep the JSON shape
stored in the database and returned by the API: each one's dict round-trips, and the dicts have the documented
keys."""

from __future__ import annotations

from core.check_evidence import NearCopyMatch, Region, regions_from_json, regions_to_json
from core.enums import Label, RunStatus
from core.retraining import HELDOUT_SET, ComparedSet, Comparison, RunResult


def test_a_comparison_round_trips_through_the_json_the_run_stores() -> None:
    metrics = {"roc_auc": 0.9, "fpr_at_threshold": 0.05, "counts": {"real": 4, "fake": 4, "total": 8}}
    comparison = Comparison(active_version="v1", candidate_version="v2", measured_at="2026-01-02T03:04:05+00:00",
                            sets=(ComparedSet(HELDOUT_SET, 8, metrics, {}), ComparedSet("base valid", 3, {}, {})))
    stored = comparison.to_dict()
    assert stored == {"active_version": "v1", "candidate_version": "v2", "measured_at": "2026-01-02T03:04:05+00:00",
                      "sets": [{"name": HELDOUT_SET, "count": 8, "candidate": metrics, "active": {}},
                               {"name": "base valid", "count": 3, "candidate": {}, "active": {}}]}
    assert Comparison.from_dict(stored) == comparison
    assert comparison.heldout == comparison.sets[0]
    assert Comparison.from_dict({"candidate_version": "v3", "sets": []}).heldout is None


def test_a_run_result_is_the_json_the_training_task_returns() -> None:
    assert RunResult("r1", RunStatus.DONE, "v2").to_dict() == {"run": "r1", "status": "done", "version": "v2"}
    assert RunResult("r1", RunStatus.FAILED).to_dict() == {"run": "r1", "status": "failed"}
    assert RunResult("r1", "not claimed").to_dict() == {"run": "r1", "status": "not claimed"}


def test_a_near_copy_match_round_trips_and_reads_matches_stored_before_every_label_was_kept() -> None:
    match = NearCopyMatch(sha256="ab" * 32, distance=12, label=Label.FAKE, by="moderator", at="2026-01-02T03:04:05Z",
                          labels=(Label.FAKE, Label.REAL), pdq_hex="0f" * 32, count=2)
    stored = match.to_dict()
    assert stored == {"sha256": "ab" * 32, "distance": 12, "label": "fake", "by": "moderator",
                      "at": "2026-01-02T03:04:05Z", "labels": ["fake", "real"], "pdq_hex": "0f" * 32, "count": 2}
    assert NearCopyMatch.from_dict(stored) == match
    older = NearCopyMatch.from_dict({"sha256": None, "distance": 3, "label": "real", "by": None, "at": None,
                                     "pdq_hex": "00" * 32})
    assert older.labels == (Label.REAL,) and older.count == 1


def test_regions_round_trip_through_the_json_a_check_stores() -> None:
    regions = (Region(box=(0, 0, 32, 32), score=0.25), Region(box=(16, 8, 48, 40), score=0.9))
    stored = regions_to_json(regions)
    assert stored == [{"box": [0, 0, 32, 32], "score": 0.25}, {"box": [16, 8, 48, 40], "score": 0.9}]
    assert regions_from_json(stored) == regions
    assert regions_to_json(None) is None and regions_from_json(None) is None
