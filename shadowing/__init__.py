"""Shadowing: dynamic resource allocation with predictive instance shadowing on Temporal and AWS.

This package is the contract and the client SDK, all a calling service needs (no AWS SDK, no dataframes):

    from shadowing import ShadowingClient, TimeSlice
    client = await ShadowingClient.connect("127.0.0.1:7233")

The public names below load on first use, so `import shadowing` stays cheap. Modules: `models` (the contract, by
topic), `errors`, `client`, `connect`, `settings`, `codec`, `ids`, `search`, `catalog`, `prices`, `metrics`,
`tracing`, `endpoints`, `faults`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

TASK_QUEUE = "shadowing"

_PUBLIC = {
    "ShadowingClient": "shadowing.client",
    "connect": "shadowing.connect",
    "Settings": "shadowing.settings",
    "load_settings": "shadowing.settings",
    "ShadowingError": "shadowing.errors",
    "InvalidRequest": "shadowing.errors",
    "UnknownEntity": "shadowing.errors",
    "TimeSliceNotActive": "shadowing.errors",
    "NotOwned": "shadowing.errors",
    "ServiceUnavailable": "shadowing.errors",
    "MigrationError": "shadowing.errors",
    "DataSyncFailed": "shadowing.errors",
    "MigrationFailed": "shadowing.errors",
    "TimeSlice": "shadowing.models",
    "EntitySpec": "shadowing.models",
    "EntityPolicy": "shadowing.models",
    "AllocationSchedule": "shadowing.models",
    "RegisterEntityInput": "shadowing.models",
    "DemandForecast": "shadowing.models",
    "MigrationResult": "shadowing.models",
    "EntityStatus": "shadowing.models",
    "SliceStatus": "shadowing.models",
    "CostLedger": "shadowing.models",
    "SETTLED_STATES": "shadowing.models",
}

if TYPE_CHECKING:
    from shadowing.client import ShadowingClient
    from shadowing.connect import connect
    from shadowing.errors import (
        DataSyncFailed,
        InvalidRequest,
        MigrationError,
        MigrationFailed,
        NotOwned,
        ServiceUnavailable,
        ShadowingError,
        TimeSliceNotActive,
        UnknownEntity,
    )
    from shadowing.models import (
        SETTLED_STATES,
        AllocationSchedule,
        CostLedger,
        DemandForecast,
        EntityPolicy,
        EntitySpec,
        EntityStatus,
        MigrationResult,
        RegisterEntityInput,
        SliceStatus,
        TimeSlice,
    )
    from shadowing.settings import Settings, load_settings


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'shadowing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "SETTLED_STATES",
    "TASK_QUEUE",
    "AllocationSchedule",
    "CostLedger",
    "DataSyncFailed",
    "DemandForecast",
    "EntityPolicy",
    "EntitySpec",
    "EntityStatus",
    "InvalidRequest",
    "MigrationError",
    "MigrationFailed",
    "MigrationResult",
    "NotOwned",
    "RegisterEntityInput",
    "ServiceUnavailable",
    "Settings",
    "ShadowingClient",
    "ShadowingError",
    "SliceStatus",
    "TimeSlice",
    "TimeSliceNotActive",
    "UnknownEntity",
    "connect",
    "load_settings",
]
