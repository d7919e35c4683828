"""`shadowctl codec-server`: Temporal's remote codec protocol, so the Web UI (and `temporal` CLI users with
`--codec-endpoint`) can read encrypted payloads.

POST /encode and /decode take and return `{"payloads": [...]}` (protobuf JSON). Whoever can call /decode reads
every payload in the namespace, so the server refuses, before it reads a body:

* a `Host` header that is not a name it serves (the bound address; 127.0.0.1, localhost and [::1] on loopback;
  `allowed_hosts`): a web page whose domain re-resolves to 127.0.0.1 (DNS rebinding) gets 403;
* a request without `Authorization: Bearer <token>` (compared in constant time): 401. A server without a token
  exists only when asked for explicitly (`allow_no_token`, the CLI's `--insecure-no-auth`) and only on loopback;
* a body over `max_body` bytes (4 MiB by default; the UI decodes one history page at a time): 413.

CORS lets the listed UI origins call it. Binds 127.0.0.1 by default.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from shadowing.codec import EncryptionCodec
from shadowing.errors import InvalidRequest

MAX_BODY = 4 * 1024 * 1024
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def served_names(host: str, allowed_hosts: Iterable[str] = ()) -> frozenset[str]:
    """The `Host` header names (without port) a server bound to `host` answers; InvalidRequest when none is known."""
    names = {h.lower().strip("[]") for h in allowed_hosts}
    if is_loopback(host):
        names |= {*LOOPBACK_NAMES, host.lower()}
    elif host not in ("", "0.0.0.0", "::"):
        names.add(host.lower().strip("[]"))
    if not names:
        raise InvalidRequest(f"bound to every interface ({host!r}): name the hosts clients use", "--allowed-host")
    return frozenset(names)


def host_name(header: str | None) -> str | None:
    """The name part of a `Host` header (`[::1]:8081` -> `::1`, `Example.com:80` -> `example.com`)."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def make_server(
    codec: EncryptionCodec, host: str = "127.0.0.1", port: int = 8081, origins: tuple[str, ...] = (),
    token: str | None = None, *, allow_no_token: bool = False, allowed_hosts: Iterable[str] = (),
    max_body: int = MAX_BODY,
) -> ThreadingHTTPServer:  # fmt: skip
    """A server for `codec`; InvalidRequest (naming the option) for a configuration that would expose payloads."""
    if not token and not allow_no_token:
        raise InvalidRequest("a token is required (or --insecure-no-auth, on loopback only)", "--token")
    if not token and not is_loopback(host):
        raise InvalidRequest(f"--insecure-no-auth is refused off loopback (bound to {host})", "--host")
    names = served_names(host, allowed_hosts)
    expected = f"Bearer {token}".encode() if token else None
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

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _host_ok(self) -> bool:
            if host_name(self.headers.get("Host")) in names:
                return True
            self._reply(403, {"message": "unknown Host header"})
            return False

        def _authorized(self) -> bool:
            if expected is None:
                return True
            given = (self.headers.get("Authorization") or "").encode()
            return hmac.compare_digest(given, expected)

        def _body(self) -> bytes | None:
            """The body, or None after replying 411/400/413 (nothing read beyond the cap)."""
            if self.headers.get("Transfer-Encoding"):
                self._reply(411, {"message": "send a Content-Length"})
                return None
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self._reply(400, {"message": "bad Content-Length"})
                return None
            if length > max_body:
                self._reply(413, {"message": f"body over {max_body} bytes"})
                return None
            return self.rfile.read(length)

        def do_OPTIONS(self) -> None:
            if not self._host_ok():
                return
            self.send_response(200)
            self._cors()
            self.end_headers()

        def do_POST(self) -> None:
            if not self._host_ok():
                return
            op = self.path.rstrip("/").rsplit("/", 1)[-1]
            if op not in ("encode", "decode"):
                return self._reply(404, {"message": f"unknown path {self.path}: POST /encode or /decode"})
            if not self._authorized():
                return self._reply(401, {"message": "missing or wrong bearer token"})
            body = self._body()
            if body is None:
                return None
            try:
                payloads = json_format.Parse(body or b"{}", Payloads())
                convert = codec.encode_one if op == "encode" else codec.decode_one
                out = Payloads(payloads=[convert(p) for p in payloads.payloads])
            except Exception as exc:  # a bad request body or a payload under an unknown key
                return self._reply(400, {"message": f"cannot {op}: {exc}"})
            self._reply(200, json_format.MessageToDict(out))

    return ThreadingHTTPServer((host, port), Handler)
