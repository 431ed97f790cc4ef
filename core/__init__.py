"""The rules every part of fakewatch shares, with nothing to configure and nothing to connect to: the closed sets
of states and labels (``core.enums``), the one error type (``core.errors``), decoding untrusted image bytes under
caps the caller states (``core.decoding``), the verdict policy (``core.policy``), what a saved model's metadata
says (``core.model_metadata``), and the typed records that cross modules: a check's near-copy match and regions
(``core.check_evidence``), a retraining run's comparison and result (``core.retraining``).

``backend`` (services, API, database) and ``models`` (Keras) both import from here and never from each other, so
the arrows between the layers run one way. Nothing here imports Flask, SQLAlchemy, Celery or TensorFlow.
"""
