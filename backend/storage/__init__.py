"""Where state lives: the engine and sessions, the SQLAlchemy schema, its Alembic migrations and the
content-addressed image store.

May import core/ and backend.settings.
"""
