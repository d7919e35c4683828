"""`shadowctl codec-server`: Temporal's remote codec protocol, so the Web UI (and `temporal` CLI users with
`--codec-endpoint`) can read encrypted payloads.

POST /encode and /decode take and return `{"payloads": [...]}` (protobuf JSON). CORS lets the UI's origin call it;
with a token set, only requests carrying `Authorization: Bearer <token>` are answered (the UI forwards the user's
access token when configured to). Binds 127.0.0.1 by default.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from shadowing.codec import EncryptionCodec


def make_server(
    codec: EncryptionCodec, host: str = "127.0.0.1", port: int = 8081, origins: tuple[str, ...] = (),
    token: str | None = None,
) -> ThreadingHTTPServer:  # fmt: skip
    allowed = set(origins)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return  # no payloads, no tokens in logs

        def _cors(self) -> None:
            origin = self.headers.get("Origin")
            if origin and origin in allowed:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", "Content-Type, Authorization, X-Namespace")
                self.send_header("Access-Control-Allow-Credentials", "true")

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self) -> None:
            self.send_response(200)
            self._cors()
            self.end_headers()

        def do_POST(self) -> None:
            op = self.path.rstrip("/").rsplit("/", 1)[-1]
            if op not in ("encode", "decode"):
                return self._reply(404, {"message": f"unknown path {self.path}: POST /encode or /decode"})
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                return self._reply(401, {"message": "missing or wrong bearer token"})
            try:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                payloads = json_format.Parse(body or b"{}", Payloads())
                convert = codec.encode_one if op == "encode" else codec.decode_one
                out = Payloads(payloads=[convert(p) for p in payloads.payloads])
            except Exception as exc:  # a bad request body or a payload under an unknown key
                return self._reply(400, {"message": f"cannot {op}: {exc}"})
            self._reply(200, json_format.MessageToDict(out))

    return ThreadingHTTPServer((host, port), Handler)
