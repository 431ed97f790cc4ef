"""What fakewatch sends out or lets go of once a check ends: signed callbacks with retries, and deleting stored
images on request or by retention.

May import core/, backend.settings, backend.shapes and backend's batches, checks, fetching, identity and storage.
"""
