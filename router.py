"""The design card's `router.py`: the intent router, pure.

Re-exports orchestrator_flows.core.routing, where the code lives.
"""

from orchestrator_flows.core.routing import *  # noqa: F403
