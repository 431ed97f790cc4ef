"""Retraining from moderators' labels.

- ``data``: what a run trains on (base dataset folders plus every reviewed image, split by SHA-256);
- ``runs``: a run's life, from the request (one at a time) through the worker's progress to its end;
- ``rescoring``: scoring the flagged images again with a newly active version;
- ``comparison``: the candidate-vs-active table the console and ``fakewatch retrain`` show.

The console, the API and the CLI call these services; the training worker (worker/training.py) does the fitting
and reports back through them. Nothing here imports TensorFlow. A run only ever adds a *candidate* version; what
is active changes only through backend/training/versions.py's ``promote_version`` or ``roll_back``.

May import core/, backend.settings and backend's checks, identity and storage.
"""
