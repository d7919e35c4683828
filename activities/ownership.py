"""Ownership: the product touches only what carries the entity's tags.

A resource belongs to an entity when it carries both `shadowing:managed-by = shadowing` and
`shadowing:entity = <entity id>`. The product sets them on everything it creates; an operator sets them on what an
entity brings (its tables, queues, database, listener) to hand it to the product. A spec is only a request: naming a
resource in it proves nothing, so every activity checks the tags before its first read or change, and refuses with
a non-retryable `NotOwned` that names the spec field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from temporalio.exceptions import ApplicationError

from activities import TAG_ENTITY, TAG_MANAGED

#: The value of `shadowing:managed-by` on every resource the product may touch.
MANAGED = "shadowing"


def tag_map(tags: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    """AWS's `[{"Key": k, "Value": v}]` lists as a dict (also `[{"key":..., "value":...}]`, as some APIs spell it)."""
    out: dict[str, str] = {}
    for tag in tags or ():
        key = tag.get("Key", tag.get("key"))
        if key is not None:
            out[str(key)] = str(tag.get("Value", tag.get("value", "")))
    return out


def owned_by(tags: Mapping[str, str], entity_id: str) -> bool:
    """True when `tags` (a dict) hand the resource to `entity_id`."""
    return tags.get(TAG_MANAGED) == MANAGED and tags.get(TAG_ENTITY) == entity_id


def ownership_tags(entity_id: str) -> list[dict[str, str]]:
    """The two tags, in AWS's list shape, to put on a resource created for `entity_id`."""
    return [{"Key": TAG_MANAGED, "Value": MANAGED}, {"Key": TAG_ENTITY, "Value": entity_id}]


def not_owned(field: str, what: str, entity_id: str, detail: str = "") -> ApplicationError:
    """The refusal: non-retryable, names the spec field and the tags that would hand the resource over."""
    more = f" ({detail})" if detail else ""
    return ApplicationError(
        f"{field}: {what} is not owned by entity {entity_id!r}{more}: tag it {TAG_MANAGED}={MANAGED} and "
        f"{TAG_ENTITY}={entity_id} to hand it to the product",
        type="NotOwned",
        non_retryable=True,
    )


def require_owned(field: str, what: str, tags: Mapping[str, str], entity_id: str) -> None:
    """Raises `not_owned` unless `tags` hand the resource to `entity_id`."""
    if not owned_by(tags, entity_id):
        raise not_owned(field, what, entity_id)
