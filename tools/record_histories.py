"""Re-records the committed workflow histories (tests/histories/) from the code as it is: `make record-histories`.

Runs the tests that write them (each checks SHADOWING_RECORD_HISTORIES; `grep -rn RECORD_HISTORIES tests` shows
which writes which), then replays them all (tests/workflows/test_replay.py) and lists what changed. Only after an
intended change to the commands a workflow issues: docs/versioning.md says when a `.before.<id>` copy is kept first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = [
    *("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/workflows", "tests/integration/test_dev_server.py"),
    *("--ignore=tests/workflows/test_replay.py", "-k", "end_to_end or not test_dev_server"),
]
REPLAY = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/workflows/test_replay.py"]


def main() -> int:
    env = {**os.environ, "SHADOWING_RECORD_HISTORIES": "1"}
    if subprocess.run([sys.executable, *RECORD], cwd=ROOT, env=env).returncode:
        print("recording failed: the histories may be partly rewritten (git checkout tests/histories)", file=sys.stderr)
        return 1
    if subprocess.run([sys.executable, *REPLAY], cwd=ROOT).returncode:
        print("the new histories do not replay", file=sys.stderr)
        return 1
    changed = subprocess.run(["git", "status", "--short", "tests/histories"], cwd=ROOT, capture_output=True, text=True)
    print(changed.stdout or "no history changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
