"""The shipped instance catalogue against EC2's own DescribeInstanceTypes data (moto's bundled copy)."""

from __future__ import annotations

import gzip
import json
from importlib import resources

from shadowing.catalog import INSTANCE_TYPES


def test_sizes_and_bandwidths_match_describe_instance_types() -> None:
    data = json.loads(
        gzip.decompress(resources.files("moto.ec2").joinpath("resources/instance_types.json.gz").read_bytes())
    )
    for name, itype in INSTANCE_TYPES.items():
        ec2 = data[name]
        assert itype.vcpus == ec2["VCpuInfo"]["DefaultVCpus"], name
        assert itype.memory_gib * 1024 == ec2["MemoryInfo"]["SizeInMiB"], name
        card = ec2["NetworkInfo"]["NetworkCards"][0]
        assert itype.network_baseline_gbps == card["BaselineBandwidthInGbps"], name
        assert itype.network_gbps == card["PeakBandwidthInGbps"], name
        # sizing counts on the sustained figure: 0.75 Gbps is 93,750 KB/s
        assert itype.network_kbps == card["BaselineBandwidthInGbps"] * 1e6 / 8, name
