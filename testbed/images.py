"""Real photos as encoded bytes (from skimage, which ships them) and a local image server on 127.0.0.1: the inputs
tests and benchmarks feed fakewatch."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image


def photo_bytes(name: str = "astronaut", fmt: str = "JPEG", size: int | None = None) -> bytes:
    import skimage.data  # noqa: PLC0415 - seconds to import; only tests that need photos pay for it

    pixels = getattr(skimage.data, name)()
    image = Image.fromarray(pixels).convert("RGB")
    if size:
        image = image.resize((size, size))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def distinct_photos(count: int, size: int = 160) -> list[bytes]:
    """``count`` different JPEGs: crops of real photos at different offsets (distinct SHA-256s)."""
    import skimage.data  # noqa: PLC0415

    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    out = []
    for index in range(count):
        photo = sources[index % len(sources)]
        crop = min(size, photo.shape[0] - 16, photo.shape[1] - 16)
        top = (index * 7) % (photo.shape[0] - crop)
        left = (index * 13) % (photo.shape[1] - crop)
        pixels = np.array(photo[top : top + crop, left : left + crop])
        # A corner block coding the index keeps every image distinct once offsets start to repeat.
        pixels[:16, :16] = index % 256
        pixels[16:32, :16] = (index // 256) * 40 % 256
        tile = Image.fromarray(pixels).resize((size, size))
        buffer = io.BytesIO()
        tile.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


Route = tuple[int, dict[str, str], bytes]


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 whose routes tests set: path -> (status, headers, body) or a callable."""

    def __init__(self) -> None:
        self.routes: dict[str, Route | Callable[[], Route]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                route = server.routes.get(self.path)
                status, headers, body = (route() if callable(route) else route) if route else (404, {}, b"not found")
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
