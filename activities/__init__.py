"""Side effects, one module per outside system. Each class receives its clients; nothing reads the environment."""

from collections.abc import Callable
from typing import Any

#: (service, region) -> boto3 client. Built by `workers/`; activities never create clients themselves.
ClientFactory = Callable[[str, str], Any]

#: Tag keys every resource the product creates carries.
TAG_ENTITY = "shadowing:entity"
TAG_FLEET = "shadowing:fleet"
TAG_SLICE = "shadowing:slice"
TAG_ROLE = "shadowing:role"
TAG_MANAGED = "shadowing:managed-by"

#: Keys of synthetic traffic (`/work?key=<prefix><n>`): warm-up sweeps them to fill caches, probes reuse them so
#: that measuring a fleet does not evict what warm-up (or real traffic on the same hot set) put there.
SYNTHETIC_KEY_PREFIX = "warm-"

__all__ = ["SYNTHETIC_KEY_PREFIX", "TAG_ENTITY", "TAG_FLEET", "TAG_MANAGED", "TAG_ROLE", "TAG_SLICE", "ClientFactory"]
