"""EC2 hourly prices the product ships, because neither moto nor most accounts' workers can ask the Pricing API.

The table lives in `shadowing/data/prices.json` (on-demand list price and a typical spot price per region and
instance type, with its source and the date it was written). It is loaded once, validated, and answers
`on_demand(type, region)` / `typical_spot(type, region)`; an unknown pair is an `InvalidRequest` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import date
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shadowing.errors import InvalidRequest, ShadowingError

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "prices.json"


class PriceTableError(ShadowingError, ValueError):
    """The price table file is missing, not JSON, or has an entry that makes no sense."""


class Price(BaseModel):
    """USD per instance-hour of one instance type in one region (Linux, shared tenancy)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    on_demand: float = Field(gt=0, description="on-demand list price")
    spot: float = Field(gt=0, description="typical spot price (not a measurement of the current market)")

    @model_validator(mode="after")
    def _spot_not_above_on_demand(self) -> Price:
        if self.spot > self.on_demand:
            raise ValueError(f"spot {self.spot} is above on-demand {self.on_demand}")
        return self


class PriceTable(BaseModel):
    """region -> instance type -> Price, with where the numbers come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(min_length=10, description="where and how the prices were obtained")
    written: date = Field(description="day the prices were written down; refresh when it gets old")
    currency: str = "USD"
    unit: str = "instance-hour"
    prices: dict[str, dict[str, Price]] = Field(min_length=1)

    def on_demand(self, instance_type: str, region: str) -> float:
        """On-demand USD/hour of `instance_type` in `region`; `InvalidRequest` if the table lacks them."""
        return self._entry(instance_type, region).on_demand

    def typical_spot(self, instance_type: str, region: str) -> float:
        """Typical spot USD/hour of `instance_type` in `region`; `InvalidRequest` if the table lacks them."""
        return self._entry(instance_type, region).spot

    def has(self, instance_type: str, region: str) -> bool:
        return instance_type in self.prices.get(region, {})

    def check_names(self, instance_types: Collection[str], regions: Collection[str]) -> None:
        """Raises `PriceTableError` for a region or instance type the catalogue does not know (a typo)."""
        for region, types in self.prices.items():
            if region not in regions:
                raise PriceTableError(f"price table: unknown region {region!r}")
            for name in types:
                if name not in instance_types:
                    raise PriceTableError(f"price table: unknown instance type {name!r} in {region}")

    def _entry(self, instance_type: str, region: str) -> Price:
        if region not in self.prices:
            known = ", ".join(sorted(self.prices))
            raise InvalidRequest(f"no EC2 prices for region {region!r} (price table has: {known})", "region")
        types = self.prices[region]
        if instance_type not in types:
            known = ", ".join(sorted(types))
            raise InvalidRequest(
                f"no EC2 price for instance type {instance_type!r} in {region} (known: {known})", "instance_type"
            )
        return types[instance_type]


def load(path: Path) -> PriceTable:
    """Reads and validates a price table; `PriceTableError` names the file and the bad entry."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PriceTableError(f"price table {path}: cannot read it as JSON: {exc}") from exc
    try:
        return PriceTable.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise PriceTableError(f"price table {path}: {problems}") from exc


@cache
def default_table() -> PriceTable:
    """The packaged table, loaded once per process."""
    return load(DEFAULT_PATH)


def on_demand(instance_type: str, region: str) -> float:
    """On-demand USD/hour from the packaged table."""
    return default_table().on_demand(instance_type, region)


def typical_spot(instance_type: str, region: str) -> float:
    """Typical spot USD/hour from the packaged table."""
    return default_table().typical_spot(instance_type, region)
