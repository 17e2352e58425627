"""DEDUP_TOPIC's cleanup policy: only compaction alone keeps every live key."""

from __future__ import annotations

import pytest

from app.dedup.changelog import check_cleanup_policy
from app.errors import ConfigError


@pytest.mark.parametrize("policy", ["compact", " compact "])
def test_a_compacted_changelog_is_accepted(policy):
    check_cleanup_policy("g-dedup", policy)


@pytest.mark.parametrize("policy", ["delete", "compact,delete", "delete,compact",
                                    "compact, delete", ""])
def test_a_changelog_whose_policy_can_drop_live_keys_is_refused_in_one_line(policy):
    with pytest.raises(ConfigError) as refused:
        check_cleanup_policy("g-dedup", policy)
    message = str(refused.value)
    assert message.startswith("invalid setting DEDUP_TOPIC=g-dedup: cleanup.policy is ")
    assert repr(policy) in message and "\n" not in message
