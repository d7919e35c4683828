"""Entity ids as Temporal sees them: workflow ids (`entity/<id>`, `migration/<id>/<slice>`, `predict/<id>/<slice>`)
and the `ShadowingEntity` search attribute.

Without payload encryption they are the entity ids themselves. With it, Temporal's database must not hold entity
ids in the clear, so they become keyed pseudonyms (`p-` + 24 hex digits of an HMAC-SHA256 of the id), and every
part of the product that needs an id derives it the same way: the client SDK, `shadowctl`, the worker's entity
lookup. `shadowctl id ENTITY` prints the workflow id and search attribute value to use with the `temporal` CLI or
the Web UI.

The pseudonym secret comes from one codec key, chosen so that neither the order of the key file nor a rotation
changes it (a changed secret renames every workflow: running entities would be started twice): the key the key
file names in `pseudonym_key`, else the smallest key id. Rotating (`current` moves to a new key id such as `k2`)
keeps it; removing that key from the file, or adding one whose id sorts before it without pinning
`pseudonym_key`, would not. A single `SHADOWING_CODEC_KEY` is its own pseudonym key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from shadowing.errors import InvalidRequest

ENTITY_PREFIX = "entity/"
PSEUDONYM_CONTEXT = b"shadowing entity pseudonyms"


def pseudonym_key_id(key_ids: Mapping[str, object], pinned: str | None = None) -> str:
    """The id of the key pseudonyms derive from: `pinned` (the key file's `pseudonym_key`), else the smallest id."""
    if pinned is not None:
        if pinned not in key_ids:
            raise InvalidRequest(f"pseudonym_key {pinned!r} is not among the keys {sorted(key_ids)}", "pseudonym_key")
        return pinned
    if not key_ids:
        raise InvalidRequest("no codec keys", "codec_key")
    return min(key_ids)


def pseudonym_secret(keys: Mapping[str, bytes], pinned: str | None = None) -> bytes:
    """The HMAC secret of `Pseudonyms`, from the key `pseudonym_key_id` picks (see the module docstring)."""
    return hmac.new(keys[pseudonym_key_id(keys, pinned)], PSEUDONYM_CONTEXT, hashlib.sha256).digest()


class Pseudonyms:
    """`ids(entity_id)`: the name Temporal knows the entity by (the id itself when `secret` is None)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret

    @property
    def hidden(self) -> bool:
        return self._secret is not None

    def __call__(self, entity_id: str) -> str:
        if self._secret is None:
            return entity_id
        return "p-" + hmac.new(self._secret, entity_id.encode(), hashlib.sha256).hexdigest()[:24]

    def entity_workflow_id(self, entity_id: str) -> str:
        return f"{ENTITY_PREFIX}{self(entity_id)}"


PLAIN = Pseudonyms()
