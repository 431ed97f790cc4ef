"""The local image server as a session fixture (testbed/images.py holds the server and the photos)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.images import LocalServer


@pytest.fixture(scope="session")
def image_server() -> Iterator[LocalServer]:
    server = LocalServer()
    yield server
    server.close()
