"""Batches: a list of image URLs, or many uploaded files, submitted at once, each becoming a check linked to the
batch.

- ``lists``: reading a submitted list (JSON, plain text, CSV or an uploaded file) and validating its lines;
- ``lifecycle``: creating a batch with its items, cancelling it, and settling its status as its items move;
- ``uploads``: an upload batch: each file through a single upload's intake, the lot in one transaction and one send;
- ``progress``: counting its items per status, its rate and time left: what a batch's summary shows;
- ``results``: one row per URL, streamed as CSV or JSON lines.

Acceptance stays fast whatever the size: the URLs are validated for syntax only (whether an address may be
fetched is decided when it is fetched, since DNS can change), their check rows are inserted in one bulk
statement, and the work goes to the broker in chunks of ids, never one message per URL.

May import core/, backend.settings and backend's checks, fetching, identity and storage.
"""
