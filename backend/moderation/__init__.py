"""What moderators do with flagged images: the review queue, labels and near-copy resolution, escalations, and
the dashboard's aggregates.

May import core/ and backend's checks, identity, matching and storage.
"""
