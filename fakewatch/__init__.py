"""The ``fakewatch`` command: one entry point over the backend, the workers, the models and the console."""
