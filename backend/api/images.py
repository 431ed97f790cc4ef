"""GET /api/v1/images/<sha256>: the stored image, for the console and the extension; and .../matches, its
near-copies."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import Response, send_file
from sqlalchemy import select

from backend.api.auth import auth
from backend.api.context import app_settings, db
from backend.matching import ImageMatches, image_matches
from backend.schema import Image
from backend.shapes import ImageMatchesOut, response_doc
from backend.store import image_path, is_sha256
from core.errors import FakewatchError, NotFound

bp = APIBlueprint("images", __name__, url_prefix="/api/v1/images", tag="Images")

MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
              "BMP": "image/bmp", "HEIF": "image/heic", "AVIF": "image/avif"}


@bp.get("/<sha256>")
@bp.auth_required(auth)
@bp.doc(summary="Download a stored image", responses=response_doc(
    200, "The original image bytes, as they were submitted", MIME_TYPES.values(), {"type": "string", "format": "binary"}))
def download_image(sha256: str) -> Response:
    if not is_sha256(sha256):
        raise FakewatchError("invalid_request", "An image is named by the 64 hex digits of its SHA-256.")
    image = db().scalar(select(Image).where(Image.sha256 == sha256))
    if image is None:
        raise NotFound(f"No stored image has SHA-256 {sha256}.")
    return send_file(image_path(image.storage_key, app_settings().images_dir),
                     mimetype=MIME_TYPES.get(image.format, "application/octet-stream"), max_age=86400,
                     etag=image.sha256)


@bp.get("/<sha256>/matches")
@bp.auth_required(auth)
@bp.output(ImageMatchesOut)
@bp.doc(summary="List an image's near-copies",
        description="Stored images and listed hashes whose PDQ hash is within the match distance of this image's.")
def list_matches(sha256: str) -> ImageMatches:
    if not is_sha256(sha256):
        raise FakewatchError("invalid_request", "An image is named by the 64 hex digits of its SHA-256.")
    return image_matches(db(), app_settings(), sha256)
