"""Encrypted payloads: entity data and AWS identifiers are not readable in Temporal's database.

`EncryptionCodec` encrypts every payload with AES-256-GCM (a fresh 96-bit nonce per payload) and writes the key id
in the payload's metadata, so keys can rotate: new payloads use the current key, old ones decode with the key they
name. Payloads without our encoding (histories written before encryption was turned on) pass through unchanged.

Keys come from settings: `SHADOWING_CODEC_KEY` (base64 of 32 bytes) with `SHADOWING_CODEC_KEY_ID`, or
`SHADOWING_CODEC_KEY_FILE`: JSON `{"current": "k2", "keys": {"k1": "<base64>", "k2": "<base64>"}}`.
`shadowctl codec-server` serves the same codec to the Web UI (Temporal's remote codec protocol).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from shadowing.errors import InvalidRequest
from shadowing.ids import pseudonym_secret

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Mapping[str, bytes], current: str, pseudonym_key: str | None = None) -> None:
        if current not in keys:
            raise InvalidRequest(f"current key {current!r} is not among the keys {sorted(keys)}", "codec_key_id")
        for key_id, key in keys.items():
            if len(key) != 32:
                raise InvalidRequest(f"key {key_id!r} must be 32 bytes (AES-256), got {len(key)}", "codec_key")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current = current
        # Pseudonyms of entity ids come from a key named explicitly, never from file order (shadowing/ids.py).
        self.id_secret = pseudonym_secret(keys, pseudonym_key)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decode_one(p) for p in payloads]

    def encode_one(self, payload: Payload) -> Payload:
        nonce = os.urandom(12)
        sealed = self._ciphers[self._current].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: self._current.encode()}, data=nonce + sealed)

    def decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was on
        key_id = payload.metadata.get(KEY_ID, b"").decode()
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise ValueError(f"payload encrypted with unknown key {key_id!r}: add it to the codec key file")
        plain = cipher.decrypt(payload.data[:12], payload.data[12:], None)
        out = Payload()
        out.ParseFromString(plain)
        return out


def new_key() -> str:
    """A fresh random key, base64, for SHADOWING_CODEC_KEY or a key file."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise InvalidRequest(f"not valid base64: {exc}", what) from exc


def codec_from(key: str | None, key_id: str, key_file: Path | None) -> EncryptionCodec | None:
    """The codec the settings describe, or None when encryption is off."""
    if key_file is not None:
        try:
            body = json.loads(Path(key_file).read_text())
            keys, current = body["keys"], body["current"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(f'expected {{"current": id, "keys": {{id: base64}}}}: {exc}', str(key_file)) from exc
        decoded = {k: _b64(v, f"{key_file}: keys.{k}") for k, v in keys.items()}
        return EncryptionCodec(decoded, current, body.get("pseudonym_key"))
    if key:
        return EncryptionCodec({key_id: _b64(key, "SHADOWING_CODEC_KEY")}, key_id)
    return None


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The product's converter (pydantic), with the codec when there is one."""
    if codec is None:
        return pydantic_data_converter
    # Failure messages and stack traces (they may name entities, fleets, tables) are encoded like payloads.
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def plaintext_ids(blob: bytes, ids: Iterable[str]) -> list[str]:
    """Which of `ids` appear verbatim in `blob` (used to check a Temporal database file)."""
    return [i for i in ids if i.encode() in blob]
