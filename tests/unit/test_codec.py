"""The AES-GCM payload codec: round trip, key rotation, pass-through of old payloads, bad keys, codec server."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload

from shadowing.codec import ENCODING, KEY_ID, EncryptionCodec, codec_from, data_converter, new_key
from shadowing.codec_server import make_server
from shadowing.errors import InvalidRequest
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


def test_codec_server_decodes_for_the_ui_with_a_token() -> None:
    codec = EncryptionCodec({"k1": _key()}, "k1")
    server = make_server(codec, port=0, origins=("http://127.0.0.1:8233",), token="t0ken")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    sealed = codec.encode_one(Payload(metadata={"encoding": b"json/plain"}, data=b'"secret-app"'))
    body = {"payloads": [{"metadata": {k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()},
                          "data": base64.b64encode(sealed.data).decode()}]}  # fmt: skip

    def post(path: str, token: str | None) -> tuple[int, dict, str | None]:
        headers = {"Content-Type": "application/json", "Origin": "http://127.0.0.1:8233"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(url + path, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read()), resp.headers.get("Access-Control-Allow-Origin")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read()), None

    try:
        status, out, cors = post("/decode", "t0ken")
        assert status == 200 and cors == "http://127.0.0.1:8233"
        assert base64.b64decode(out["payloads"][0]["data"]) == b'"secret-app"'
        assert post("/decode", None)[0] == 401 and post("/decode", "wrong")[0] == 401
        assert post("/nope", "t0ken")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


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
    assert Settings().codec_key is not None and Settings().codec_key not in repr(Settings())
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


def test_failure_messages_are_encoded_with_the_codec() -> None:
    from temporalio.converter import DefaultFailureConverterWithEncodedAttributes

    assert data_converter(codec_from(new_key(), "k1", None)).failure_converter_class is (
        DefaultFailureConverterWithEncodedAttributes
    )
