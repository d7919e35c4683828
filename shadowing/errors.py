"""One small hierarchy for every failure a caller can act on.

    ShadowingError
     ├── InvalidRequest            bad input; names the field (CLI exit code 2)
     │    ├── UnknownEntity         no EntitySchedule runs for that entity id
     │    ├── NotOwned              a resource the spec names does not carry the entity's ownership tags
     │    └── TimeSliceNotActive    "Time slice is not active"
     ├── ServiceUnavailable        Temporal or AWS cannot be reached / did not become healthy
     └── MigrationError            the migration ran and failed (after its compensations)
          ├── DataSyncFailed        "Data synchronization failed"
          └── MigrationFailed       "Migration failed" (traffic was rolled back)

Inside workflows and activities these travel as `temporalio.exceptions.ApplicationError` whose `type` is the
class name below; `NON_RETRYABLE` lists those that retrying cannot fix.
"""

from __future__ import annotations


class ShadowingError(Exception):
    """Base of every error the product raises on purpose."""


class InvalidRequest(ShadowingError, ValueError):
    """A request is malformed or names something that does not exist."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class UnknownEntity(InvalidRequest):
    def __init__(self, entity_id: str) -> None:
        super().__init__(f"unknown entity {entity_id!r}: no EntitySchedule is running for it", "entity_id")


class TimeSliceNotActive(InvalidRequest):
    MESSAGE = "Time slice is not active"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.MESSAGE}{': ' + detail if detail else ''}", "time_slice")


class NotOwned(InvalidRequest):
    """A resource the spec names is not the entity's (see activities/ownership.py); nothing was changed."""


class ServiceUnavailable(ShadowingError):
    """Temporal or AWS could not be reached within the deadline."""


class MigrationError(ShadowingError):
    """A migration failed; its compensations have run."""


class DataSyncFailed(MigrationError):
    MESSAGE = "Data synchronization failed"


class MigrationFailed(MigrationError):
    MESSAGE = "Migration failed"


class RollbackRefused(MigrationError):
    """The migration failed after a promoted RDS replica took writes: moving back would lose them, so nothing was
    undone (traffic, fleets and data stay as they are); docs/operations.md has the runbook."""

    MESSAGE = "Rollback refused"


class WriteFenceFailed(MigrationError):
    """`consistency: fenced`: the old fleet's writes could not be held, drained and moved within the deadline; the
    writes were released where they were and the migration rolled back."""

    MESSAGE = "Write fence failed"


#: ApplicationError types that must not be retried.
NON_RETRYABLE: tuple[str, ...] = (
    "InvalidRequest",
    "UnknownEntity",
    "NotOwned",
    "TimeSliceNotActive",
    "DataSyncFailed",
    "MigrationFailed",
    "InstanceNeverHealthy",
    "FleetNotWarm",
    "RollbackRefused",
    "WriteFenceFailed",
)

#: ApplicationError type -> exception the client SDK raises for it.
BY_TYPE: dict[str, type[ShadowingError]] = {
    "InvalidRequest": InvalidRequest,
    "TimeSliceNotActive": InvalidRequest,
    "UnknownEntity": InvalidRequest,
    "NotOwned": NotOwned,
    "DataSyncFailed": DataSyncFailed,
    "MigrationFailed": MigrationFailed,
    "RollbackRefused": RollbackRefused,
    "WriteFenceFailed": WriteFenceFailed,
}
