#!/usr/bin/env python3
"""A tiny webhook receiver for .ci/container-test: counts the POSTs apprise's json:// sends.

    webhook-receiver.py PORT_FILE LOG_FILE

Binds 127.0.0.1 on a free port, writes the port to PORT_FILE, appends each POST body as
one line to LOG_FILE (so `wc -l` counts deliveries), answers 200. Standard library only.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    port_file, log_file = Path(sys.argv[1]), Path(sys.argv[2])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            try:
                title = json.loads(body).get("title", "")
            except ValueError:
                title = "(not JSON)"
            with log_file.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"path": self.path, "title": title}) + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    log_file.touch()
    port_file.write_text(f"{server.server_address[1]}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
