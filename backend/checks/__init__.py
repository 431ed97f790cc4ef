"""Checks from request to verdict: the check service (intake and state changes), dispatch to the workers, the
hand-off to the broker and the embedded broker, idempotent POSTs, and the evidence a verdict weighs.

May import core/, backend.settings and backend's batches, fetching, identity, matching, provenance, storage and training.
"""
