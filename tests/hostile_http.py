"""A loopback HTTP server for hostile-answer tests (``top``, ``report``): GET /<case>/... answers
``cases[case]``; "drip" sends one byte every 0.5 s for a minute, "endless" streams ~40 MiB. Imported by the
test modules as ``hostile_http`` (pytest puts ``tests/`` on the path)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HostileServer:
    def __init__(self, cases: dict[str, bytes], content_type: str, drip: bytes, endless: bytes) -> None:
        stopping = self.stopping = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                case = self.path.strip("/").split("/")[0]
                self.send_response(200 if case in cases or case in ("drip", "endless") else 404)
                self.send_header("Content-Type", content_type)
                self.end_headers()
                try:
                    if case == "drip":
                        for _ in range(120):
                            if stopping.wait(0.5):
                                return
                            self.wfile.write(drip)
                            self.wfile.flush()
                    elif case == "endless":
                        for _ in range(640):
                            if stopping.is_set():
                                return
                            self.wfile.write(endless)
                    elif case in cases:
                        self.wfile.write(cases[case])
                except OSError:
                    pass   # the client under test gave up: what it should do

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
