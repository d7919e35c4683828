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
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    ActivitySerializationContext,
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.exceptions import ApplicationError

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


def invalid_input(exc: ValidationError, hint: object = None) -> str:
    """`field: problem (got value)` for the first problem pydantic found, without its boilerplate (no "1 validation
    error for", no errors.pydantic.dev link). For a union hint (EntitySchedule's input) the first member's errors."""
    errors = exc.errors(include_url=False)
    members = {getattr(a, "__name__", "") for a in typing.get_args(hint)} - {""}
    if members and errors and errors[0]["loc"] and errors[0]["loc"][0] in members:
        first = errors[0]["loc"][0]
        errors = [{**e, "loc": e["loc"][1:]} for e in errors if e["loc"] and e["loc"][0] == first]
    err = errors[0]
    field = ".".join(str(p) for p in err["loc"]) or "input"
    problem = str(err["msg"]).removeprefix("Value error, ")
    problem = problem[:1].lower() + problem[1:]
    if problem.startswith(f"{field}.") or problem.startswith(f"{field}:"):
        problem = problem[len(field) + 1 :].lstrip()
    detail = []
    if err["type"] not in ("missing", "value_error", "json_invalid", "assertion_error"):
        shown = repr(err.get("input"))
        detail.append(f"got {shown if len(shown) <= 60 else shown[:57] + '...'}")
    if len(errors) > 1:
        detail.append(f"{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''}")
    return f"{field}: {problem}{' (' + '; '.join(detail) + ')' if detail else ''}"


class _ContractJSON(PydanticJSONPlainPayloadConverter, WithSerializationContext):
    """Pydantic JSON whose decoding failures are the sender's: a non-retryable `InvalidRequest` ApplicationError
    with a clean message, so a workflow start, update or signal sent raw (the temporal CLI, the Web UI, another
    language's SDK) is refused as bad input instead of "Failed decoding arguments (type: RuntimeError, retryable:
    true)". The SDK passes a FailureError through its decoding unwrapped: a bad update is rejected before its
    validator, a bad workflow input fails the workflow, a bad signal is dropped and logged. An activity's result
    (ActivitySerializationContext) comes from our own code: its decoding errors stay the SDK's (a task failure, which
    a fixed deploy can retry)."""

    def __init__(self) -> None:
        super().__init__()
        self.strict = True

    def with_context(self, context: SerializationContext) -> _ContractJSON:
        if isinstance(context, ActivitySerializationContext) == (not self.strict):
            return self
        other = _ContractJSON.__new__(_ContractJSON)
        other.__dict__.update(self.__dict__)
        other.strict = not isinstance(context, ActivitySerializationContext)
        return other

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        try:
            return super().from_payload(payload, type_hint)
        except ValidationError as exc:
            if not self.strict:
                raise
            raise ApplicationError(invalid_input(exc, type_hint), type="InvalidRequest", non_retryable=True) from None


class ContractPayloadConverter(CompositePayloadConverter):
    """temporalio.contrib.pydantic's converter with `_ContractJSON` for JSON."""

    def __init__(self) -> None:
        super().__init__(
            *(
                _ContractJSON() if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


CONVERTER = DataConverter(payload_converter_class=ContractPayloadConverter)


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The product's converter (pydantic; bad input is a non-retryable InvalidRequest), with the codec when there is
    one."""
    if codec is None:
        return CONVERTER
    # Failure messages and stack traces (they may name entities, fleets, tables) are encoded like payloads.
    return dataclasses.replace(
        CONVERTER,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def plaintext_ids(blob: bytes, ids: Iterable[str]) -> list[str]:
    """Which of `ids` appear verbatim in `blob` (used to check a Temporal database file)."""
    return [i for i in ids if i.encode() in blob]
