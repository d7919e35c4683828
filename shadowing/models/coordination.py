"""The fleet coordinator: limits, leases requested, granted and released, and its carried state."""

from __future__ import annotations

from pydantic import Field

from shadowing.models.base import Frozen, Region, UtcDatetime

# ---- fleet coordination -------------------------------------------------------------------------------


class CoordinatorLimits(Frozen):
    """Account-wide limits shared by every entity: concurrent migrations and shadow instances per region."""

    max_concurrent_migrations: int = Field(10, ge=1)
    region_shadow_quota: int = Field(200, ge=1, description="shadow instances in flight per region")
    region_quotas: dict[str, int] = Field(default_factory=dict, description="per-region overrides")

    def quota(self, region: str) -> int:
        return self.region_quotas.get(region, self.region_shadow_quota)


class LeaseRequest(Frozen):
    """An entity asks for the right to run one migration of `instances` shadows in `region` until `expires_at`."""

    holder: str = Field(description="the entity workflow id the grant is signalled to")
    slice_key: str
    region: Region
    instances: int = Field(ge=1)
    expires_at: UtcDatetime
    limits: CoordinatorLimits | None = None
    coordinator_id: str = "shadowing-coordinator"
    nonce: str = Field("", max_length=64, description="echoed in the grant: only the requester's answer counts")


class LeaseRelease(Frozen):
    holder: str
    slice_key: str


class LeaseGrant(Frozen):
    """Signalled to the holder: granted, or denied with the reason (a request larger than a quota)."""

    slice_key: str
    granted: bool
    coordinator_id: str
    reason: str = ""
    nonce: str = Field("", max_length=64, description="the request's nonce")


class CoordinatorState(Frozen):
    limits: CoordinatorLimits = CoordinatorLimits()
    held: tuple[LeaseRequest, ...] = ()
    waiting: tuple[LeaseRequest, ...] = ()
    granted_total: int = 0
    max_seen_concurrent: int = 0
