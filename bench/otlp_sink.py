"""A discarding OTLP/HTTP receiver for `bench.e2e --otlp-endpoint`: answers every export 200
(an empty ExportTraceServiceResponse is zero bytes) and counts the bytes it was sent, so a
traced run pays for its spans' export without a collector's own work in the figures.

    python -m bench.otlp_sink [--port 4318]
"""

from __future__ import annotations

import argparse
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the exporter reuses its connection
    received_bytes = 0
    exports = 0

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        _Sink.received_bytes += length
        _Sink.exports += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # stop on SIGTERM too, printing the counts
    parser = argparse.ArgumentParser(prog="bench.otlp_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=4318)
    port = parser.parse_args().port
    server = ThreadingHTTPServer(("127.0.0.1", port), _Sink)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        print(f"exports: {_Sink.exports}, bytes: {_Sink.received_bytes}", flush=True)


if __name__ == "__main__":
    main()
