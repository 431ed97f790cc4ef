"""Model versions: registering a saved model (from its metadata JSON, without TensorFlow) and choosing which one
is active: promoting a candidate, rolling back to an earlier version. Each change of the active version is one
transaction, so exactly one version is active at any time.

Promotion goes through one guard, inside :func:`promote_version` so every caller (console, API, CLI) gets it: the
candidate must have been measured against the version active now on at least ``promotion_min_heldout``
held-out reviewed images, and its false-positive rate there must be no worse. Only a typed reason overrides it,
and the reason is kept (``model_activations``). Rolling back goes only to versions that were active before."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.identity.access import Actor, require
from backend.identity.audit import record
from backend.settings import Settings
from backend.storage.db import get_or_not_found
from backend.storage.schema import ModelActivation, ModelVersion, TrainingRun, utcnow
from backend.storage.store import MODELS, ObjectStore, open_store
from backend.training.model_files import FILES_KEY, describe_files, files_present, publish, version_file_paths
from core.enums import ActivationKind, AuditAction, Permission, RunStatus
from core.errors import FakewatchError
from core.model_metadata import SHIPPED_MODEL, file_sha256, metadata_path, read_metadata
from core.retraining import Comparison


def _checked_metadata(model_path: Path) -> dict[str, Any]:
    meta_file = metadata_path(model_path)
    if not model_path.is_file() or not meta_file.is_file():
        raise FakewatchError("invalid_model", f"{model_path} needs its metadata file {meta_file.name} beside it.")
    return read_metadata(model_path)


def register_model(session: Session, model_path: Path, activate: bool = False,
                   store: ObjectStore | None = None) -> ModelVersion:
    """Register a saved model; registering the same version name again returns the existing row. With ``store``
    (the models area: backend/training/model_files.py), its files are published there first, so workers on any
    host can fetch them; the row records each file's SHA-256 either way."""
    model_path = model_path.resolve()
    metadata = _checked_metadata(model_path)
    sha = file_sha256(model_path)
    if metadata.get("sha256") and metadata["sha256"] != sha:
        raise FakewatchError("invalid_model", f"{model_path.name} does not match the SHA-256 in its metadata: the "
                                              "file is damaged or was replaced.")
    name = str(metadata.get("name") or model_path.stem)
    version = session.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if version is None:
        paths = version_file_paths(model_path)
        file = str(model_path)
        if store is not None:
            publish(store, name, paths)
            file = file if store.is_local else store.location(f"{name}/{model_path.name}")
        version = ModelVersion(
            name=name,
            file=file,
            sha256=sha,
            architecture=str(metadata.get("architecture", "default")),
            metrics=metadata.get("metrics", {}),
            details={**metadata, FILES_KEY: describe_files(paths)},
            threshold=float(metadata.get("threshold", 0.5)),
            band=float(metadata.get("band", 0.0)),
        )
        session.add(version)
        session.flush()
    if activate:
        activate_version(session, version.id)
    return version


def active_version(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)))


def require_active_version(session: Session) -> ModelVersion:
    version = active_version(session)
    if version is None:
        raise FakewatchError(
            "no_active_model",
            "No model version is active, so nothing can be scored. Run `fakewatch db upgrade` to register the "
            "shipped default model, or promote a version from the console.",
            503,
        )
    return version


def get_version(session: Session, version_id: int) -> ModelVersion:
    return get_or_not_found(session, ModelVersion, version_id, "model version")


def activate_version(session: Session, version_id: int) -> ModelVersion:
    """Make this version the only active one (no check that its file is there: see :func:`promote_version`)."""
    version = get_version(session, version_id)
    session.execute(update(ModelVersion).where(ModelVersion.id != version_id).values(active=False))
    version.active = True
    version.activated_at = utcnow()
    session.flush()
    return version


MIN_OVERRIDE_REASON_CHARS = 10


@dataclass(frozen=True)
class PromotionCheck:
    """What the promotion guard found for a candidate: the held-out comparison it rests on and every reason to
    refuse (none: it may be promoted)."""

    candidate: str
    active: str | None
    heldout_images: int
    candidate_fpr: float | None
    active_fpr: float | None
    refusals: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return not self.refusals


def latest_comparison(session: Session, version_id: int) -> Comparison | None:
    """The candidate-vs-active comparison measured by the training run that produced this version, if any."""
    run = session.scalar(select(TrainingRun).where(TrainingRun.model_version_id == version_id,
                                                   TrainingRun.status == RunStatus.DONE)
                         .order_by(TrainingRun.finished_at.desc()).limit(1))
    comparison = (run.progress or {}).get("comparison") if run is not None else None
    return Comparison.from_dict(comparison) if isinstance(comparison, dict) else None


def check_promotion(session: Session, version_id: int, settings: Settings) -> PromotionCheck:
    """The promotion guard, without promoting: what the console shows before the button, and what
    :func:`promote_version` enforces."""
    version = get_version(session, version_id)
    current = active_version(session)
    if current is None or current.id == version.id:
        # Nothing active (nothing is scored at all) or already active: there is nothing to protect.
        return PromotionCheck(version.name, current.name if current else None, 0, None, None, ())
    comparison = latest_comparison(session, version.id)
    heldout = comparison.heldout if comparison is not None else None
    count = heldout.count if heldout is not None else 0
    candidate_fpr = heldout.candidate.get("fpr_at_threshold") if heldout is not None else None
    active_fpr = heldout.active.get("fpr_at_threshold") if heldout is not None else None
    refusals = []
    measured = comparison.active_version if comparison is not None else None
    if measured != current.name:
        refusals.append(f"{version.name} was never measured against the active version {current.name}"
                        + (f" (only against {measured})." if measured else "."))
    if count < settings.promotion_min_heldout:
        refusals.append(f"Only {count} held-out reviewed image(s) compared it with {current.name}; promotion needs "
                        f"at least {settings.promotion_min_heldout} (FAKEWATCH_PROMOTION_MIN_HELDOUT).")
    if candidate_fpr is None or active_fpr is None:
        refusals.append("No false-positive rate to compare: the held-out images hold no real photo.")
    elif candidate_fpr > active_fpr:
        refusals.append(f"Its false-positive rate on the held-out images is worse: {candidate_fpr:.1%} against "
                        f"{active_fpr:.1%} for {current.name}.")
    return PromotionCheck(version.name, current.name, count, candidate_fpr, active_fpr, tuple(refusals))


def promote_version(session: Session, version_id: int, settings: Settings, *, actor: Actor,
                    override_reason: str | None = None) -> ModelVersion:
    """Make a candidate active in one transaction, if the promotion guard allows it or ``override_reason`` says why
    to go ahead anyway (kept with the activation and in the audit event); scoring workers switch before their next
    chunk of checks. Promoting, and so overriding, needs Permission.PROMOTE (admins only)."""
    require(actor, Permission.PROMOTE)
    check = check_promotion(session, version_id, settings)
    reason = (override_reason or "").strip()
    if check.refusals:
        if not reason:
            raise FakewatchError("promotion_refused", " ".join(check.refusals)
                                 + " An admin can override with a typed reason.", 409)
        if len(reason) < MIN_OVERRIDE_REASON_CHARS:
            raise FakewatchError("invalid_request", f"An override reason has at least {MIN_OVERRIDE_REASON_CHARS} "
                                                    "characters: say why this model should be active.")
    overridden = reason if check.refusals else None
    version = _switch_audited(session, version_id, actor, AuditAction.PROMOTE,
                              {"refusal": " ".join(check.refusals) or None, "override_reason": overridden},
                              store=open_store(settings, MODELS))
    session.add(ModelActivation(model_version_id=version.id, kind=ActivationKind.PROMOTE, by=actor.label,
                                refusal=" ".join(check.refusals) or None, override_reason=overridden))
    session.flush()
    return version


def _switch_audited(session: Session, version_id: int, actor: Actor, action: AuditAction,
                    extra: dict[str, Any] | None = None, store: ObjectStore | None = None) -> ModelVersion:
    version = get_version(session, version_id)
    if not files_present(version, store):
        raise FakewatchError("invalid_model", f"The file of version {version.name} is missing: {version.file}.", 409)
    before = active_version(session)
    activated = activate_version(session, version_id)
    record(session, actor, action, ("model_version", activated.id),
           {"active": before.name if before else None, "active_id": before.id if before else None},
           {"active": activated.name, "active_id": activated.id, **(extra or {})})
    return activated


def rollback_candidates(session: Session) -> list[ModelVersion]:
    """The versions a roll-back may return to: those that were active before (never a candidate that was not),
    the most recently active first."""
    return list(session.scalars(select(ModelVersion).where(ModelVersion.active.is_(False),
                                                           ModelVersion.activated_at.is_not(None))
                                .order_by(ModelVersion.activated_at.desc(), ModelVersion.id.desc())))


def previous_version(session: Session) -> ModelVersion | None:
    """The version that was active before the current one (the latest activated among the inactive)."""
    earlier = rollback_candidates(session)
    return earlier[0] if earlier else None


def roll_back(session: Session, version_id: int | None = None, *, actor: Actor) -> ModelVersion:
    """Re-activate ``version_id`` (one that was active before), or the version active before the current one."""
    require(actor, Permission.PROMOTE)
    earlier = {version.id: version for version in rollback_candidates(session)}
    if version_id is None:
        if not earlier:
            raise FakewatchError("nothing_to_roll_back", "No earlier version has ever been active.", 409)
        version_id = next(iter(earlier))
    elif version_id not in earlier:
        name = get_version(session, version_id).name
        raise FakewatchError("not_previously_active", f"{name} was never active: a roll-back returns only to a "
                                                      "version that was; promote a candidate instead.", 409)
    version = _switch_audited(session, version_id, actor, AuditAction.ROLL_BACK)
    session.add(ModelActivation(model_version_id=version.id, kind=ActivationKind.ROLL_BACK, by=actor.label))
    session.flush()
    return version


def activation_history(session: Session, limit: int = 20) -> list[ModelActivation]:
    return list(session.scalars(select(ModelActivation).order_by(ModelActivation.created_at.desc(),
                                                                 ModelActivation.id.desc()).limit(limit)))


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())))


def ensure_shipped_model(session: Session, store: ObjectStore | None = None) -> ModelVersion | None:
    """On a fresh database, register the shipped default (publishing it to ``store``) and make it active, so the
    first check can be scored."""
    if active_version(session) is not None or not SHIPPED_MODEL.is_file():
        return active_version(session)
    return register_model(session, SHIPPED_MODEL, activate=True, store=store)
