"""What the product knows about AWS without asking it: regions and instance types.

moto has no Pricing API, so sizes and prices are shipped. Per-region on-demand and typical spot prices come
from the price table `shadowing/data/prices.json` (see `shadowing.prices`, which names its source and date);
`InstanceType.on_demand_usd_hour` is the us-east-1 list price, and a region the table lacks is priced by
scaling it with the region factor below (the usual ratio of that region's list prices to us-east-1).
"""

from __future__ import annotations

from dataclasses import dataclass

from shadowing import prices

#: Commercial AWS regions an entity may run in.
REGIONS: frozenset[str] = frozenset(
    {
        "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
        "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "eu-south-1",
        "ap-southeast-1", "ap-southeast-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
        "ap-south-1", "ap-east-1", "me-south-1", "af-south-1",
    }
)  # fmt: skip

#: Price of a region relative to us-east-1 (list prices, 2026-11); 1.0 for regions not listed.
REGION_PRICE_FACTOR: dict[str, float] = {
    "eu-west-1": 1.11, "eu-central-1": 1.19, "ap-southeast-2": 1.25, "ap-southeast-1": 1.25,
    "ap-northeast-1": 1.29, "sa-east-1": 1.59, "us-west-1": 1.17,
}  # fmt: skip

#: Clock speed assumed per vCPU when demand is measured in MHz (the Bitbrains traces are).
MHZ_PER_VCPU = 2500.0


@dataclass(frozen=True)
class InstanceType:
    """Capacity and list price of one EC2 instance type."""

    name: str
    vcpus: int
    memory_gib: float
    network_gbps: float  # the burst ("up to") bandwidth
    on_demand_usd_hour: float
    network_baseline_gbps: float = 0.0  # sustained bandwidth: what sizing counts on (0: unknown, not sized for)

    @property
    def cpu_mhz(self) -> float:
        return self.vcpus * MHZ_PER_VCPU

    @property
    def memory_kb(self) -> float:
        return self.memory_gib * 1024 * 1024

    @property
    def network_kbps(self) -> float:
        """Sustained network capacity in KB/s (the baseline: the burst lasts minutes, a slice lasts hours)."""
        return self.network_baseline_gbps * 1e6 / 8

    def price(self, region: str) -> float:
        """On-demand USD/hour in `region`: the price table's, else the us-east-1 price x the region factor."""
        if PRICES.has(self.name, region):
            return PRICES.on_demand(self.name, region)
        return round(self.on_demand_usd_hour * REGION_PRICE_FACTOR.get(region, 1.0), 5)


#: Burst and baseline bandwidth: EC2 DescribeInstanceTypes (NetworkInfo.NetworkPerformance and
#: NetworkCards[0].BaselineBandwidthInGbps), as moto ships them (tests/unit/test_catalog.py compares the two).
INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in [
        InstanceType("t3.medium", 2, 4, 5, 0.0416, 0.256),
        InstanceType("t3.large", 2, 8, 5, 0.0832, 0.512),
        InstanceType("m5.large", 2, 8, 10, 0.096, 0.75),
        InstanceType("m5.xlarge", 4, 16, 10, 0.192, 1.25),
        InstanceType("m5.2xlarge", 8, 32, 10, 0.384, 2.5),
        InstanceType("c5.large", 2, 4, 10, 0.085, 0.75),
        InstanceType("c5.xlarge", 4, 8, 10, 0.17, 1.25),
        InstanceType("c5.2xlarge", 8, 16, 10, 0.34, 2.5),
        InstanceType("r5.large", 2, 16, 10, 0.126, 0.75),
        InstanceType("r5.xlarge", 4, 32, 10, 0.252, 1.25),
    ]
}

#: Loaded when the catalogue is imported (outside any workflow sandbox), and checked against it for typos.
PRICES = prices.default_table()
PRICES.check_names(INSTANCE_TYPES, REGIONS)
