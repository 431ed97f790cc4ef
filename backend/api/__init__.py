"""The Flask API: an application factory over the backend services (see backend/api/*.py for the routes)."""

from __future__ import annotations

import re
from typing import Any

from apiflask import APIFlask
from flask_cors import CORS

from backend.api import batches, checks, errors, health, images, training
from backend.api.auth import make_limiter
from backend.api.session import close_session
from backend.settings import get_settings

EXTENSION_ORIGINS = [re.compile(r"^chrome-extension://[a-z]+$"), re.compile(r"^moz-extension://[0-9a-f-]+$"),
                     re.compile(r"^safari-web-extension://[0-9A-Za-z-]+$")]
# Multipart framing and form fields on top of the largest accepted image.
REQUEST_OVERHEAD_BYTES = 64 * 1024


def create_app(test_config: dict[str, Any] | None = None) -> APIFlask:
    settings = get_settings()
    app = APIFlask("fakewatch", title="fakewatch API", version="1.0",
                   spec_path="/api/openapi.json", docs_path="/docs")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_image_bytes + REQUEST_OVERHEAD_BYTES,
        INFO={"description": "Submit images or URLs and get a real / fake / uncertain verdict. "
                             "Authenticate with `Authorization: Bearer <key>` (`fakewatch keys create NAME`)."},
    )
    if test_config:
        app.config.update(test_config)
    CORS(app, resources={r"/api/*": {"origins": EXTENSION_ORIGINS + list(settings.cors_origins)}},
         allow_headers=["Authorization", "Content-Type"], max_age=600)
    limiter = make_limiter(settings.rate_limit, settings.rate_limit_storage)
    limiter.init_app(app)
    # Probes and docs are not API calls; a load balancer polling them must never be throttled.
    limiter.exempt(health.bp)
    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(checks.bp)
    app.register_blueprint(images.bp)
    app.register_blueprint(training.bp)
    app.register_blueprint(batches.bp)
    app.teardown_appcontext(close_session)

    @app.spec_processor
    def document_request_bodies(spec: dict[str, Any]) -> dict[str, Any]:
        # These bodies come in several content types (multipart, JSON, text), which one input schema cannot say.
        for path, body_doc in (("/api/v1/checks", checks.CHECK_BODY_DOC), ("/api/v1/batches", batches.BATCH_BODY_DOC)):
            operation = spec.get("paths", {}).get(path, {}).get("post")
            if operation is not None:
                operation.update(body_doc)
        return spec

    return app
