"""GET /api/v1/images/<sha256>: the stored image, for the console and the extension."""

from __future__ import annotations

import re

from apiflask import APIBlueprint
from flask import send_file
from sqlalchemy import select

from backend.api.auth import auth
from backend.api.session import db
from backend.errors import FakewatchError, NotFound
from backend.schema import Image
from backend.store import image_path

bp = APIBlueprint("images", __name__, url_prefix="/api/v1/images", tag="Images")

MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
              "BMP": "image/bmp", "HEIF": "image/heic", "AVIF": "image/avif"}


@bp.get("/<sha256>")
@bp.auth_required(auth)
@bp.doc(summary="Download a stored image", responses={200: {"description": "The original image bytes"}})
def read_image(sha256: str):  # type: ignore[no-untyped-def]
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise FakewatchError("invalid_request", "An image is named by the 64 hex digits of its SHA-256.")
    image = db().scalar(select(Image).where(Image.sha256 == sha256))
    if image is None:
        raise NotFound(f"No stored image has SHA-256 {sha256}.")
    return send_file(image_path(image.storage_key), mimetype=MIME_TYPES.get(image.format, "application/octet-stream"),
                     max_age=86400, etag=image.sha256)
