"""The sync-check benchmark (benchmarks/sync_check.py) at tiny sizes against moto: each size ends in sync and the
changed-mode check compares exactly the keys written since the verified fence."""

from __future__ import annotations

from benchmarks.sync_check import measure
from workers.aws import AwsClients


def test_both_sizes_end_in_sync_having_checked_the_changed_keys(aws: AwsClients) -> None:
    """Each size is verified, changed, checked in changed mode (seeing exactly the writes) and cleaned up."""
    figures = measure(aws, small=30, large=120, changed=7, seed=1)
    assert (figures["items_small"], figures["items_large"], figures["changed"]) == (30, 120, 7)
    assert figures["in_sync_small"] and figures["in_sync_large"]
    assert figures["changed_seen_small"] == figures["changed_seen_large"] == 7
    assert aws("dynamodb", "us-east-1").list_tables()["TableNames"] == []
    assert aws("dynamodb", "eu-west-1").list_tables()["TableNames"] == []
