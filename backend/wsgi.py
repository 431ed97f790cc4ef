"""WSGI entry point for gunicorn: ``gunicorn backend.wsgi:app`` (settings from the environment)."""

from backend.api import create_app
from backend.checks.metrics import install_structured_logs
from backend.settings import Settings

settings = Settings()
if settings.log_format == "json":
    install_structured_logs()
app = create_app(settings)
