"""The orchestration benchmark (benchmarks/orchestration.py) at N=2: its own dev server, moto and data plane; both
entities migrate and the printed figures are sane (run pytest with -s to see the table)."""

from __future__ import annotations

import pytest

from benchmarks.orchestration import BILLED, Options, measure, per_migration, table

pytestmark = pytest.mark.slow


async def test_two_entities_each_migrate_once_and_the_figures_add_up() -> None:
    f = await measure(2, Options(min_lead_s=15.0, watch_s=2.0), progress=print)
    printed = table([f], {})
    print("\n" + printed)
    assert f["entities"] == 2
    assert f["completed"] == 2, f  # a migration that did not complete fails the smoke test
    assert f["rolled_back"] == 0 and not f["problems"], f
    assert f["migration_outcomes"] == {"migrated": 2}, f
    assert f["switch_s"]["n"] == 2
    assert 0 <= f["switch_s"]["p50"] <= f["switch_s"]["p99"] < 60
    assert f["cpu_s"]["worker"] > 0 and f["forecast_cpu_s"] > 0
    assert f["cpu_s"]["worker"] > f["forecast_cpu_s"]
    # two entity workflows, two migrations and the coordinator at least started in the window
    assert f["actions_window"]["workflow started"] >= 3
    assert f["actions_window"]["activity attempts"] >= 2 * 10  # forecast, lease, provision, ..., terminate
    assert f["actions_window"]["schedule updates"] == 2
    assert f["actions_window_billed"] == sum(f["actions_window"].get(k, 0) for k in BILLED)
    p = per_migration(f)
    assert p["actions"] > 0 and p["db_bytes"] > 0 and p["worker_cpu_s"] > 0
    assert f"{2:>5}  {2:>5}" in printed.splitlines()[2]
