"""gunicorn's settings for the API, one file for `fakewatch api` and docker-compose (``-c python:...``).

Threads, not an async worker: the views are plain blocking code over SQLAlchemy, and what once held every thread
(``?wait`` on uploads) is bounded per process by ``FAKEWATCH_WAIT_SLOTS`` instead (backend/api/idempotent.py), so
reads always find a free thread. Idle kept-alive connections are held far longer than any client polls (the CLI
polls every 0.5-2 s, the extension about every second), so a poll never races the server closing its connection;
an idle connection costs the gthread worker a socket in its selector, not a thread."""

worker_class = "gthread"
threads = 16
timeout = 60
graceful_timeout = 20
keepalive = 75
accesslog = "-"
