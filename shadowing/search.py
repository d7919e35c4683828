"""Typed search attributes: how the Web UI and `temporal workflow list --query` find entities and migrations.

    temporal workflow list --query "ShadowingEntity = 'checkout-api'"
    temporal workflow list --query "WorkflowType = 'ShadowMigration' AND ShadowingTargetRegion = 'eu-west-1'"

They must exist on the namespace before a workflow sets them: the embedded dev server is started with them, and
`ensure_search_attributes` adds them through the operator service (the worker and `shadowctl up` call it).
"""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

ENTITY = SearchAttributeKey.for_keyword("ShadowingEntity")
PHASE = SearchAttributeKey.for_keyword("ShadowingPhase")
ACTIVE_REGION = SearchAttributeKey.for_keyword("ShadowingActiveRegion")
TARGET_REGION = SearchAttributeKey.for_keyword("ShadowingTargetRegion")
SLICE_START = SearchAttributeKey.for_datetime("ShadowingSliceStart")
ALL = (ENTITY, PHASE, ACTIVE_REGION, TARGET_REGION, SLICE_START)
_TYPES = {
    "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "DATETIME": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
}


def dev_server_args() -> list[str]:
    """`temporal server start-dev` flags that register every attribute at start."""
    return [a for key in ALL for a in ("--search-attribute", f"{key.name}={key.indexed_value_type.name.title()}")]


async def ensure_search_attributes(client: Client) -> list[str]:
    """Adds the attributes the namespace lacks; returns their names. Needs operator rights on the namespace."""
    namespace = client.namespace
    try:
        have = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
        known = set(have.custom_attributes) | set(have.system_attributes)
    except RPCError as exc:  # the time-skipping test server cannot list, only add
        if exc.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {k.name: _TYPES[k.indexed_value_type.name] for k in ALL if k.name not in known}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)
