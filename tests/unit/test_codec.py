"""The AES-GCM payload codec: round trip, key rotation, pass-through of old payloads, bad keys, codec server."""

from __future__ import annotations

import base64
import contextlib
import hmac
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload

from shadowctl.codec_server import MAX_BODY, make_server
from shadowing.codec import ENCODING, KEY_ID, EncryptionCodec, codec_from, data_converter, new_key
from shadowing.errors import InvalidRequest
from shadowing.ids import Pseudonyms, pseudonym_key_id, pseudonym_secret
from shadowing.models import FleetRef
from shadowing.settings import Settings


def _key() -> bytes:
    return base64.b64decode(new_key())


async def test_round_trip_hides_the_plaintext_and_names_the_key() -> None:
    codec = EncryptionCodec({"k1": _key()}, "k1")
    fleet = FleetRef(fleet_id="secret-app:x", entity_id="secret-app", region="eu-west-1", instance_type="m5.large")
    plain = (await data_converter(None).encode([fleet]))[0]
    sealed = (await codec.encode([plain]))[0]
    assert b"secret-app" not in sealed.SerializeToString()
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == b"k1"
    assert (await codec.decode([sealed]))[0] == plain
    assert (await codec.decode([plain]))[0] == plain, "payloads from before encryption pass through"
    conv = data_converter(codec)
    assert (await conv.decode(await conv.encode([fleet]), [FleetRef]))[0] == fleet


async def test_rotation_decodes_old_payloads_and_unknown_keys_fail_clearly(tmp_path: Path) -> None:
    k1, k2 = new_key(), new_key()
    old = codec_from(k1, "k1", None)
    assert old is not None
    sealed = old.encode_one(Payload(data=b"hello"))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"current": "k2", "keys": {"k1": k1, "k2": k2}}))
    rotated = codec_from(None, "ignored", keys)
    assert rotated is not None
    assert rotated.decode_one(sealed).data == b"hello"
    assert rotated.encode_one(Payload(data=b"x")).metadata[KEY_ID] == b"k2"
    only_k2 = EncryptionCodec({"k2": base64.b64decode(k2)}, "k2")
    with pytest.raises(ValueError, match="unknown key 'k1'"):
        only_k2.decode_one(sealed)


@pytest.mark.parametrize(
    ("key", "file_body", "field"),
    [("not base64!", None, "SHADOWING_CODEC_KEY"), (base64.b64encode(b"short").decode(), None, "codec_key"),
     (None, "{}", "keys.json"), (None, '{"current": "k9", "keys": {}}', "codec_key_id")],
)  # fmt: skip
def test_bad_keys_are_clear_errors(tmp_path: Path, key: str | None, file_body: str | None, field: str) -> None:
    path = None
    if file_body is not None:
        path = tmp_path / "keys.json"
        path.write_text(file_body)
    with pytest.raises(InvalidRequest) as err:
        codec_from(key, "k1", path)
    assert field in str(err.value)


@contextlib.contextmanager
def _serving(codec: EncryptionCodec, **options: Any) -> Iterator[int]:
    """A codec server on a free loopback port for the block; yields the port."""
    server = make_server(codec, port=0, origins=(UI,), **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, str | None]:
    """(status, JSON body, Access-Control-Allow-Origin); `headers` may set Host (http.client then sends that)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", "Origin": UI, **headers})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}"), resp.getheader("Access-Control-Allow-Origin")
    finally:
        conn.close()


def _sealed_body(codec: EncryptionCodec) -> bytes:
    sealed = codec.encode_one(Payload(metadata={"encoding": b"json/plain"}, data=b'"secret-app"'))
    return json.dumps({"payloads": [{"metadata": {k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()},
                                     "data": base64.b64encode(sealed.data).decode()}]}).encode()  # fmt: skip


UI = "http://127.0.0.1:8233"
BEARER = {"Authorization": "Bearer t0ken"}


def test_codec_server_decodes_for_the_ui_with_a_token() -> None:
    """With the token the UI gets plaintext; without it, or with a wrong one, 401; an unknown path 404."""
    codec = EncryptionCodec({"k1": _key()}, "k1")
    body = _sealed_body(codec)
    with _serving(codec, token="t0ken") as port:
        status, out, cors = _post(port, "/decode", body, BEARER)
        assert status == 200 and cors == UI
        assert base64.b64decode(out["payloads"][0]["data"]) == b'"secret-app"'
        assert _post(port, "/decode", body, {})[0] == 401
        assert _post(port, "/decode", body, {"Authorization": "Bearer wrong"})[0] == 401
        assert _post(port, "/decode", body, {"Authorization": "Bearer t0ken2"})[0] == 401
        assert _post(port, "/nope", body, BEARER)[0] == 404


def test_codec_server_compares_the_token_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bearer token is checked with hmac.compare_digest, not ==, so its timing says nothing of the token."""
    codec = EncryptionCodec({"k1": _key()}, "k1")
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    with _serving(codec, token="t0ken") as port:
        assert _post(port, "/decode", _sealed_body(codec), {"Authorization": "Bearer nope"})[0] == 401
    assert seen == [(b"Bearer nope", b"Bearer t0ken")]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8081", "127.0.0.1.nip.io", "10.0.0.5"])
def test_codec_server_refuses_foreign_host_headers(host: str) -> None:
    """A page whose name re-resolves to 127.0.0.1 (DNS rebinding) sends its own Host: refused, token or not."""
    codec = EncryptionCodec({"k1": _key()}, "k1")
    with _serving(codec, token="t0ken") as port:
        status, out, _ = _post(port, "/decode", _sealed_body(codec), {**BEARER, "Host": host})
        assert status == 403 and "payloads" not in out
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("OPTIONS", "/decode", headers={"Host": host, "Origin": UI})
        assert conn.getresponse().status == 403
        conn.close()
        for ok in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
            assert _post(port, "/decode", _sealed_body(codec), {**BEARER, "Host": ok})[0] == 200, ok


def test_codec_server_caps_the_body() -> None:
    """A body over the cap is refused with 413 before it is read; the default cap is 4 MiB."""
    assert MAX_BODY == 4 * 1024 * 1024
    codec = EncryptionCodec({"k1": _key()}, "k1")
    body = _sealed_body(codec)
    with _serving(codec, token="t0ken", max_body=len(body)) as port:
        assert _post(port, "/decode", body, BEARER)[0] == 200
        assert _post(port, "/decode", body + b" ", BEARER)[0] == 413
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.putrequest("POST", "/decode")
        conn.putheader("Authorization", "Bearer t0ken")
        conn.putheader("Content-Length", str(10 * MAX_BODY))  # announced, never sent: must not be waited for
        conn.endheaders()
        assert conn.getresponse().status == 413
        conn.close()
        assert _post(port, "/decode", body, {**BEARER, "Content-Length": "-1"})[0] == 400


def test_codec_server_needs_a_token_unless_explicitly_insecure_on_loopback() -> None:
    """No token: refused unless --insecure-no-auth, and that only on loopback; every interface needs host names."""
    codec = EncryptionCodec({"k1": _key()}, "k1")
    with pytest.raises(InvalidRequest) as err:
        make_server(codec, port=0)
    assert err.value.field == "--token"
    for host in ("0.0.0.0", "192.0.2.10"):
        with pytest.raises(InvalidRequest) as err:
            make_server(codec, host=host, port=0, allow_no_token=True)
        assert err.value.field == "--host"
    with pytest.raises(InvalidRequest) as err:
        make_server(codec, host="0.0.0.0", port=0, token="t0ken")
    assert err.value.field == "--allowed-host"
    with _serving(codec, allow_no_token=True) as port:
        assert _post(port, "/decode", _sealed_body(codec), {})[0] == 200


def test_remote_cluster_options_from_temporal_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TEMPORAL_API_KEY implies TLS; mTLS needs both files; a missing file names its variable; the key is not in
    the settings' repr (never logged)."""
    from shadowing.settings import Settings

    assert Settings().temporal_connect_options() == {}
    monkeypatch.setenv("TEMPORAL_API_KEY", "sekrit-key")
    opts = Settings().temporal_connect_options()
    assert opts["api_key"] == "sekrit-key" and opts["tls"] is not None
    assert "sekrit-key" not in repr(Settings())
    monkeypatch.setenv("SHADOWING_CODEC_KEY", new_key())
    key = Settings().codec_key
    assert key is not None and key.get_secret_value() not in repr(Settings())
    assert key.get_secret_value() not in str(Settings().model_dump()), "secrets stay out of dumps (logs)"
    monkeypatch.delenv("SHADOWING_CODEC_KEY")
    monkeypatch.delenv("TEMPORAL_API_KEY")
    cert = tmp_path / "c.pem"
    cert.write_bytes(b"CERT")
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(cert))
    with pytest.raises(InvalidRequest, match="both"):
        Settings().temporal_connect_options()
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(tmp_path / "missing.pem"))
    with pytest.raises(InvalidRequest) as err:
        Settings().temporal_connect_options()
    assert err.value.field == "TEMPORAL_TLS_CLIENT_KEY_PATH"


def test_entity_ids_become_pseudonyms_that_survive_key_rotation(tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    single = Settings(codec_key=first, codec_key_id="k1").pseudonyms()
    keyfile = tmp_path / "keys.json"
    keyfile.write_text(json.dumps({"current": "k2", "keys": {"k1": first, "k2": second}}))
    rotated = Settings(codec_key_file=keyfile).pseudonyms()
    assert single("shop") == rotated("shop") != "shop", "adding a key keeps every pseudonym"
    assert single("shop").startswith("p-") and single("shop") != single("shop2")
    assert Settings(codec_key=second).pseudonyms()("shop") != single("shop"), "keyed: another key, another name"
    plain = Settings().pseudonyms()
    assert plain("shop") == "shop" and plain.entity_workflow_id("shop") == "entity/shop" and not plain.hidden


def test_the_pseudonym_key_is_stable_under_reordering_and_rotation() -> None:
    """The pseudonym secret comes from the smallest key id (or the pinned `pseudonym_key`), never from file order:
    reordering the keys or adding one for rotation keeps every workflow id."""
    k0, k1, k2 = _key(), _key(), _key()
    base = pseudonym_secret({"k1": k1})
    assert pseudonym_secret({"k2": k2, "k1": k1}) == pseudonym_secret({"k1": k1, "k2": k2}) == base
    assert pseudonym_secret({"k0": k0, "k1": k1}) != base, "a smaller id moves it: pin pseudonym_key then"
    assert pseudonym_secret({"k0": k0, "k1": k1}, "k1") == base
    assert pseudonym_key_id({"b": k1, "a": k2}) == "a"
    with pytest.raises(InvalidRequest) as err:
        pseudonym_secret({"k1": k1}, "k9")
    assert err.value.field == "pseudonym_key"
    raw = new_key()
    single = Settings(codec_key=raw).pseudonyms()("shop")
    assert Pseudonyms(pseudonym_secret({"k1": base64.b64decode(raw)}))("shop") == single, "single-key ids unchanged"


def test_failure_messages_are_encoded_with_the_codec() -> None:
    from temporalio.converter import DefaultFailureConverterWithEncodedAttributes

    assert data_converter(codec_from(new_key(), "k1", None)).failure_converter_class is (
        DefaultFailureConverterWithEncodedAttributes
    )


def test_pseudonyms_do_not_depend_on_key_file_order(tmp_path: Path) -> None:
    """Reordering a key file's keys keeps every pseudonym (so every workflow id); `pseudonym_key` picks the key."""
    k1, k2 = (base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2))
    secrets = []
    for n, keys in enumerate([{"k1": k1, "k2": k2}, {"k2": k2, "k1": k1}]):
        path = tmp_path / f"keys{n}.json"
        path.write_text(json.dumps({"current": "k2", "keys": keys}))
        codec = codec_from(None, "k1", path)
        assert codec is not None
        secrets.append(codec.id_secret)
    assert secrets[0] == secrets[1]
    pinned = tmp_path / "pinned.json"
    pinned.write_text(json.dumps({"current": "k1", "keys": {"k1": k1, "k2": k2}, "pseudonym_key": "k2"}))
    codec = codec_from(None, "k1", pinned)
    assert codec is not None and codec.id_secret != secrets[0]
