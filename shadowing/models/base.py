"""The building blocks every model shares: `Frozen`, the checked scalar types (regions, instance types, entity ids,
DNS names, addresses, durations) and their validators.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from shadowing.catalog import INSTANCE_TYPES, REGIONS

_ENTITY_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


#: One DNS label (RFC 1123): letters, digits and '-', not at either end; '_' allowed (service labels).
_DNS_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


_HOSTED_ZONE = re.compile(r"[A-Z0-9]{1,32}")  # AWS: Z..., moto: any upper-case alphanumerics


#: Longest wait or window any policy may name (a week): a bound far past any slice, far below timedelta's.
MAX_SECONDS = 7 * 86400.0


#: Slices one schedule may hold: the workflow keeps them in its state (continue-as-new carries them).
MAX_SLICES = 1000


#: A registry/repository[:tag][@digest] reference; no characters a boot script would have to quote.
CONTAINER_IMAGE = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$"


def _check_region(value: str) -> str:
    if value not in REGIONS:
        raise ValueError(f"unknown AWS region {value!r}")
    return value


def _check_instance_type(value: str) -> str:
    if value not in INSTANCE_TYPES:
        known = ", ".join(sorted(INSTANCE_TYPES))
        raise ValueError(f"unknown instance type {value!r} (known: {known})")
    return value


def _check_entity_id(value: str) -> str:
    if not _ENTITY_ID.fullmatch(value):
        raise ValueError(f"entity id {value!r} must be 1-63 lowercase letters, digits or '-'")
    return value


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def normalize_dns_name(value: str) -> str:
    """Lower case, no trailing dot, RFC 1123 labels, at most 253 characters (Route53 stores names in lower case)."""
    name = value.rstrip(".").lower()
    if not 3 <= len(name) <= 253:
        raise ValueError(f"DNS name {value!r} must be 3-253 characters")
    bad = [label for label in name.split(".") if not _DNS_LABEL.fullmatch(label)]
    if bad or "." not in name:
        raise ValueError(f"DNS name {value!r} must be dot-separated labels of 1-63 letters, digits or '-' ({bad})")
    return name


def _check_hosted_zone(value: str) -> str:
    zone = value.removeprefix("/hostedzone/")
    if not _HOSTED_ZONE.fullmatch(zone):
        raise ValueError(f"hosted zone id {value!r} must be 1-32 upper-case letters or digits, e.g. Z0123456789ABC")
    return zone


#: AWS's IPv6 service addresses (metadata, DNS, time): link-local in all but name.
AWS_IPV6_SERVICES = ipaddress.ip_network("fd00:ec2::/32")


def check_address(value: str, loopback: bool = True) -> str:
    """An instance address as a canonical IP: never link-local (the metadata service), multicast, unspecified or
    reserved, IPv4-mapped forms included; loopback only with `loopback`. ValueError says which."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"address {value!r} is not an IP address") from None
    seen = ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip  # ::ffff:169.254.169.254 too
    kinds = {
        "link-local (the instance metadata service lives there)": seen.is_link_local or seen in AWS_IPV6_SERVICES,
        "multicast": seen.is_multicast, "unspecified": seen.is_unspecified, "reserved": seen.is_reserved,
        "loopback": seen.is_loopback and not loopback,
    }  # fmt: skip
    if bad := [kind for kind, hit in kinds.items() if hit]:
        raise ValueError(f"address {value!r} is {bad[0]}: not an instance address")
    return str(ip)


Region = Annotated[str, AfterValidator(_check_region)]


InstanceTypeName = Annotated[str, AfterValidator(_check_instance_type)]


EntityId = Annotated[str, AfterValidator(_check_entity_id)]


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]


DnsName = Annotated[str, AfterValidator(normalize_dns_name)]


HostedZoneId = Annotated[str, AfterValidator(_check_hosted_zone)]


Address = Annotated[str, AfterValidator(check_address)]


#: A duration in seconds: finite (every model refuses inf/nan) and at most a week.
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]


class Frozen(BaseModel):
    # inf and nan are refused everywhere: `timedelta(seconds=inf)` raises inside a workflow task, forever.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
