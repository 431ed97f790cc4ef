"""The Flask API: an application factory over the backend services (see backend/api/*.py for the routes).

May import core/ and every other backend package: it is the top of the backend."""

from __future__ import annotations

import json
import re
from typing import Any

from apiflask import APIFlask
from flask_cors import CORS

from backend.api import batches, checks, errors, health, images, model_versions, observability, reviews, training
from backend.api.auth import make_limiter
from backend.api.context import EXTENSION, apply_response_headers, close_session
from backend.api.idempotent import WAIT_SLOTS, make_wait_slots
from backend.provenance.intake import load_trust_anchors
from backend.settings import Settings
from backend.shapes import ERROR_DESCRIPTIONS, ErrorOut

EXTENSION_ORIGINS = [re.compile(r"^chrome-extension://[a-z]+$"), re.compile(r"^moz-extension://[0-9a-f-]+$"),
                     re.compile(r"^safari-web-extension://[0-9A-Za-z-]+$")]
# Multipart framing and form fields on top of the largest accepted image.
REQUEST_OVERHEAD_BYTES = 64 * 1024


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> APIFlask:
    """The API for these settings (by default, those of the environment: ``FAKEWATCH_*`` and ``.env``); every
    view reads them, and its database session is on the database they name. ``test_config`` overrides Flask's
    own configuration, as in Flask's tutorial."""
    settings = settings if settings is not None else Settings()
    load_trust_anchors(settings)  # a wrong FAKEWATCH_TRUST_ANCHORS stops the API here, not at the first upload
    app = APIFlask("fakewatch", title="fakewatch API", version="1.0",
                   spec_path="/api/openapi.json", docs_path="/docs")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + REQUEST_OVERHEAD_BYTES,
        INFO={"description": "Submit images or URLs and get a real / fake / uncertain verdict. "
                             "Authenticate with `Authorization: Bearer <key>` (`fakewatch keys create NAME`)."},
        # The spec documents the error body every endpoint really sends.
        HTTP_ERROR_SCHEMA=ErrorOut,
        VALIDATION_ERROR_SCHEMA=ErrorOut,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions[EXTENSION] = settings
    app.extensions[WAIT_SLOTS] = make_wait_slots(settings.wait_slots)
    CORS(app, resources={r"/api/*": {"origins": EXTENSION_ORIGINS + list(settings.cors_origins)}},
         allow_headers=["Authorization", "Content-Type", "Idempotency-Key"], max_age=600)
    # Registered before the limiter's hook, so it runs after it (Flask runs them in reverse).
    app.after_request(apply_response_headers)
    limiter = make_limiter(settings.rate_limit, settings.rate_limit_storage)
    limiter.init_app(app)
    # Probes and docs are not API calls; a load balancer polling them must never be throttled.
    limiter.exempt(health.bp)
    metrics_bp = observability.install(app, settings)
    if metrics_bp is not None:
        limiter.exempt(metrics_bp)
    errors.register(app)
    for blueprint in (health.bp, checks.bp, images.bp, training.bp, batches.bp, reviews.bp, model_versions.bp):
        app.register_blueprint(blueprint)
    app.teardown_appcontext(close_session)

    @app.spec_processor
    def finish_spec(spec: Any) -> Any:
        # These bodies come in several content types (multipart, JSON, text), which one input schema cannot say.
        for path, body_doc in (("/api/v1/checks", checks.CHECK_BODY_DOC), ("/api/v1/batches", batches.BATCH_BODY_DOC)):
            operation = spec.get("paths", {}).get(path, {}).get("post")
            if operation is not None:
                operation.update(body_doc)
        _document_common_errors(spec)
        return fold_duplicate_schemas(spec)

    return app


def _document_common_errors(spec: dict[str, Any]) -> None:
    """Statuses any API call can get, whatever its view: rate limited (429, every call but the probes), a
    request body over the size cap (413, every POST), a failure of the server's own (500)."""
    def doc(status: int) -> dict[str, Any]:
        # The finished spec holds references, not schema classes.
        return {"description": ERROR_DESCRIPTIONS[status],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}

    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            statuses = [500] + ([] if path in ("/healthz", "/readyz") else [429]) + ([413] if method == "post" else [])
            for status in statuses:
                operation["responses"].setdefault(str(status), doc(status))


def fold_duplicate_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """APIFlask registers a response schema it first met nested in another one (BatchOut inside BatchPage) a second
    time, as ``BatchOut1``: point the references back at the one declaration and drop the copy."""
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    copies = {name: name.rstrip("0123456789") for name in schemas
              if name[-1].isdigit() and schemas.get(name.rstrip("0123456789")) == schemas[name]}
    if not copies:
        return spec
    for name in copies:
        del schemas[name]
    text = json.dumps(spec)
    for name, original in copies.items():
        text = text.replace(f'"#/components/schemas/{name}"', f'"#/components/schemas/{original}"')
    folded: dict[str, Any] = json.loads(text)
    return folded
