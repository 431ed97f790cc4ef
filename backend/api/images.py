"""GET /api/v1/images/<sha256>: the stored image, for the console and the extension; .../matches, its
near-copies; DELETE removes it (backend/delivery/retention.py says what goes and what stays)."""

from __future__ import annotations

from dataclasses import replace
from io import BytesIO
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean
from flask import Response, send_file
from sqlalchemy import select

from backend.api.auth import auth, current_actor
from backend.api.context import app_settings, db
from backend.checks.service import image_visible
from backend.delivery.retention import Deleted, delete_image
from backend.matching.lookups import ImageMatches, image_matches
from backend.shapes import DeletedImageOut, ImageMatchesOut, error_doc, response_doc
from backend.storage.schema import Image
from backend.storage.store import image_store, is_sha256, read_stored
from core.errors import FakewatchError, NotFound
from core.video import MIME_TYPES as VIDEO_MIME_TYPES

bp = APIBlueprint("images", __name__, url_prefix="/api/v1/images", tag="Images")

MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
              "BMP": "image/bmp", "HEIF": "image/heic", "AVIF": "image/avif", **VIDEO_MIME_TYPES}


@bp.get("/<sha256>")
@bp.auth_required(auth)
@bp.doc(summary="Download a stored image", responses={**response_doc(
    200, "The original image bytes, as they were submitted, as an attachment (never rendered inline)",
    MIME_TYPES.values(), {"type": "string", "format": "binary"}), **error_doc(422)})
def download_image(sha256: str) -> Response:
    if not is_sha256(sha256):
        raise FakewatchError("invalid_request", "An image is named by the 64 hex digits of its SHA-256.")
    image = db().scalar(select(Image).where(Image.sha256 == sha256))
    # A submitter reads only the images of its own checks; anyone else's answer exactly as a missing one.
    if image is None or image.deleted_at is not None or not image_visible(db(), image, current_actor()):
        raise NotFound(f"No stored image has SHA-256 {sha256}.")
    mimetype = MIME_TYPES.get(image.format, "application/octet-stream")
    data = read_stored(image.storage_key, image_store(app_settings()))
    response = send_file(BytesIO(data), mimetype=mimetype, max_age=86400, etag=image.sha256, as_attachment=True,
                         download_name=f"{image.sha256}.{mimetype.rsplit('/', 1)[-1].replace('octet-stream', 'bin')}")
    # The bytes are the submitter's, untouched: a browser must neither sniff them into HTML (a GIF with a script
    # tail) nor render them inline on this origin, nor run anything in them.
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Tenant-scoped bytes behind a key: a browser may keep them, a shared proxy must not (send_file says public).
    response.cache_control.public = False
    response.cache_control.private = True
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@bp.get("/<sha256>/matches")
@bp.auth_required(auth)
@bp.output(ImageMatchesOut)
@bp.doc(summary="List an image's near-copies",
        description="Stored images and listed hashes whose PDQ hash is within the match distance of this image's.",
        responses=error_doc(422))
def list_matches(sha256: str) -> ImageMatches:
    if not is_sha256(sha256):
        raise FakewatchError("invalid_request", "An image is named by the 64 hex digits of its SHA-256.")
    actor, session = current_actor(), db()
    image = session.scalar(select(Image).where(Image.sha256 == sha256))
    if image is None or not image_visible(session, image, actor):
        raise NotFound(f"No stored image has SHA-256 {sha256}.")
    matches = image_matches(session, app_settings(), sha256)
    # A submitter sees only the copies among its own images (listed hashes come from shared lists, not keys).
    return replace(matches, copies=[copy for copy in matches.copies if image_visible(session, copy.image, actor)])


class DeleteQuery(Schema):
    purge = Boolean(load_default=False, metadata={
        "description": "Also remove the PDQ hash and the labels (kept by default for near-duplicate matching)."})


@bp.delete("/<sha256>")
@bp.auth_required(auth)
@bp.input(DeleteQuery, location="query", arg_name="query")
@bp.output(DeletedImageOut, description="Deleted: bytes gone, checks kept and marked")
@bp.doc(summary="Delete a stored image (takedown or privacy request): an admin's key", responses=error_doc(403))
def remove_image(sha256: str, query: dict[str, Any]) -> Deleted:
    session = db()
    deleted = delete_image(session, app_settings(), sha256, purge=query["purge"], actor=current_actor())
    session.commit()
    return deleted
