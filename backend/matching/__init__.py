"""Near-duplicate matching: PDQ hashes of decoded pixels and the copy rule, the in-memory index, the lookups
scoring and the API make, and the hash lists and banks teams share.

May import core/, backend.settings and backend.storage.
"""
