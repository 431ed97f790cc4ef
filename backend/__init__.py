"""fakewatch backend: settings, database, intake and the services every entry point calls.

Nothing in this package imports TensorFlow; the Keras side lives in ``models``.
"""
