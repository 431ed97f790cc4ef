"""Fetching URLs on a user's behalf without reaching what the server can reach (the SSRF guard), and the
allowlist of non-public hosts the server may reach all the same.

May import core/ and backend.settings.
"""
