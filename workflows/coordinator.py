"""FleetCoordinator: one per namespace, a semaphore over migrations shared by every entity.

Entities ask for a lease before they provision shadows (`request_lease` signal-with-starts this workflow) and
release it when their migration settles. A lease is granted, first come first served, while fewer than
`max_concurrent_migrations` are held and the region's shadow instances in flight stay within its quota, so that
many entities sharing a slice boundary do not exceed the account's limits. A request larger than a quota on its own
is denied at once (it could never be granted). Leases expire at the end of their slice, so a holder that vanished
(terminated by hand) cannot block the others for ever. The grant is a signal back to the holder.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from shadowing.models import CoordinatorState, LeaseGrant, LeaseRelease, LeaseRequest
    from workflows.waiting import wait_until


@workflow.defn(name="FleetCoordinator")
class FleetCoordinatorWorkflow:
    def __init__(self) -> None:
        self._s = CoordinatorState()
        self._outbox: list[tuple[str, LeaseGrant]] = []
        self._changed = False

    @workflow.run
    async def run(self, state: CoordinatorState) -> None:
        self._s = state.model_copy(
            update={"held": self._s.held + state.held, "waiting": state.waiting + self._s.waiting}
        )
        self._changed = True
        while True:
            self._changed = False  # before granting: a signal that lands while we send grants is not lost
            self._expire()
            self._grant()
            while self._outbox:
                holder, grant = self._outbox.pop(0)
                try:
                    await workflow.get_external_workflow_handle(holder).signal("lease_granted", grant)
                except Exception as exc:  # the holder is gone: its lease expires with its slice
                    workflow.logger.warning("could not signal %s: %s", holder, exc)
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._s)
            nxt = min((lease.expires_at for lease in self._s.held), default=None)
            if nxt is None:  # nothing expires: only a signal can change anything
                await workflow.wait_condition(lambda: self._changed)
            else:  # a lease expiring and a request arriving together give one history whatever woke the loop
                await wait_until(max(nxt, workflow.now() + timedelta(seconds=1)), lambda: self._changed)

    @workflow.signal(name="acquire")
    def acquire(self, req: LeaseRequest) -> None:
        if req.limits is not None:
            self._s = self._s.model_copy(update={"limits": req.limits})
        if any(_same(x, req) for x in (*self._s.held, *self._s.waiting)):
            return  # a retried request: already known
        self._s = self._s.model_copy(update={"waiting": (*self._s.waiting, req)})
        self._changed = True

    @workflow.signal(name="release")
    def release(self, rel: LeaseRelease) -> None:
        keep = lambda leases: tuple(x for x in leases if not _same(x, rel))  # noqa: E731
        self._s = self._s.model_copy(update={"held": keep(self._s.held), "waiting": keep(self._s.waiting)})
        self._changed = True

    @workflow.query(name="leases")
    def leases(self) -> CoordinatorState:
        return self._s

    def _expire(self) -> None:
        now = workflow.now()
        live = tuple(x for x in self._s.held if x.expires_at > now)
        waiting = tuple(x for x in self._s.waiting if x.expires_at > now)
        self._s = self._s.model_copy(update={"held": live, "waiting": waiting})

    def _grant(self) -> None:
        limits = self._s.limits
        held, waiting = list(self._s.held), []
        for req in self._s.waiting:
            quota = limits.quota(req.region)
            if req.instances > quota:
                reason = f"{req.instances} shadow instances exceed the {req.region} quota of {quota}"
                denied = LeaseGrant(
                    slice_key=req.slice_key,
                    granted=False,
                    coordinator_id=req.coordinator_id,
                    reason=reason,
                    nonce=req.nonce,
                )
                self._outbox.append((req.holder, denied))
                continue
            in_region = sum(x.instances for x in held if x.region == req.region)
            if len(held) < limits.max_concurrent_migrations and in_region + req.instances <= quota:
                held.append(req)
                self._outbox.append(
                    (
                        req.holder,
                        LeaseGrant(
                            slice_key=req.slice_key, granted=True, coordinator_id=req.coordinator_id, nonce=req.nonce
                        ),
                    )
                )
                self._s = self._s.model_copy(update={"granted_total": self._s.granted_total + 1})
            else:
                waiting.append(req)
        self._s = self._s.model_copy(
            update={
                "held": tuple(held),
                "waiting": tuple(waiting),
                "max_seen_concurrent": max(self._s.max_seen_concurrent, len(held)),
            }
        )


def _same(a: LeaseRequest, b: LeaseRequest | LeaseRelease) -> bool:
    return a.holder == b.holder and a.slice_key == b.slice_key
