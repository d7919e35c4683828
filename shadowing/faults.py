"""What a fault rule is: the contract of `SHADOWING_AWS_FAULTS` (settings) and of the injector that carries them
out (`workers/fault_injection.py`, which hooks the worker's boto3 clients). See that module for what each fault does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

FaultKind = Literal["error", "throttle", "timeout", "capacity", "spot-unfulfilled", "lost-reply", "latency"]


class FaultRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    operation: str = Field("*", description="'service:Operation' with * wildcards, e.g. 'ec2:RunInstances'")
    fault: FaultKind
    activity: str | None = Field(None, description="only calls made from this activity type")
    workflow: str | None = Field(None, description="only calls made for workflows whose id contains this")
    region: str | None = None
    after: int = Field(0, ge=0, description="matching calls let through before the fault starts")
    times: int = Field(1, ge=0, description="matching calls that fault (0: every one)")
    delay_s: float = Field(0.0, ge=0, description="latency/timeout: how long the call hangs first")


RULES = TypeAdapter(tuple[FaultRule, ...])


def parse_rules(text: str) -> tuple[FaultRule, ...]:
    """Rules from JSON (a list of objects); a ValueError naming the bad rule otherwise."""
    return RULES.validate_json(text)
