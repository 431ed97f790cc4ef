"""WSGI entry point for gunicorn: ``gunicorn backend.wsgi:app`` (settings from the environment)."""

from backend.api import create_app

app = create_app()
