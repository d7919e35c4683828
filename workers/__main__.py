"""`shadowing-worker` / `python -m workers`: the worker alone, configured from the environment (shadowing/settings.py).

The base install's entry point: no CLI libraries, so the worker image carries only what a worker needs. Exits 2 on a
bad setting (the message names it), 1 when Temporal cannot be reached, 130 on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import sys

from shadowing.errors import InvalidRequest, ServiceUnavailable
from shadowing.settings import load_settings
from workers.main import serve


def main() -> None:
    try:
        asyncio.run(serve(load_settings()))
    except InvalidRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except ServiceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
