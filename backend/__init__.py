"""fakewatch backend: settings, database, the image store, the URL fetcher, the response shapes and the services
every entry point calls (the API in ``backend.api``, the workers, the console, the CLI).

It builds on ``core`` and never imports ``models``, so nothing here loads TensorFlow; the Keras side lives in
``models`` and only the workers load it.
"""
