"""What the tests and the benchmarks both use: a running fakewatch (``testbed.stack``: API and worker processes on
SQLite or PostgreSQL and Redis, isolated settings, throwaway databases), photos and a local image server
(``testbed.images``), and files carrying provenance (``testbed.provenance_files``).

May import core/ and backend/; never tests/ or benchmarks/, which both import from here. Not part of a deployment.
"""
