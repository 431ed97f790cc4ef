"""WSGI entry point for gunicorn: ``gunicorn backend.wsgi:app`` (settings from the environment)."""

from backend.api import create_app
from backend.api.observability import log_as_configured

app = create_app()
log_as_configured(app)
