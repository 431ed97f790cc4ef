"""The Keras side of fakewatch: data pipeline, architectures, training, evaluation and serving.

Nothing here knows about Flask, Celery or the database. TensorFlow is imported lazily by the modules that need
it, so importing ``models`` (or ``models.cli``) stays cheap.
"""
