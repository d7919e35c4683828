"""Entity ids as Temporal sees them: workflow ids (`entity/<id>`, `migration/<id>/<slice>`, `predict/<id>/<slice>`)
and the `ShadowingEntity` search attribute.

Without payload encryption they are the entity ids themselves. With it, Temporal's database must not hold entity
ids in the clear, so they become keyed pseudonyms (`p-` + 24 hex digits of an HMAC-SHA256 of the id). The key is
derived from the codec's key material (the key file's first key, so that adding keys for rotation keeps every
pseudonym), and every part of the product that needs an id derives it the same way: the client SDK, `shadowctl`,
the worker's entity lookup. `shadowctl id ENTITY` prints the workflow id and search attribute value to use with the
`temporal` CLI or the Web UI.
"""

from __future__ import annotations

import hashlib
import hmac

ENTITY_PREFIX = "entity/"


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
