"""Whether a test card number shows in text, in whatever grouping it was sent."""

from __future__ import annotations

import re

# The test card 4111 1111 1111 1111 whole, its groups joined by up to three characters (a
# space, "%20", a dash): logs carry random ids and timestamps, where "4111" alone can appear.
_TEST_CARD = re.compile(r"4111(?:(?:%20|\D){0,3}1111){3}")


def shows_test_card(text: str) -> bool:
    return _TEST_CARD.search(text) is not None
