"""The design card's `redis_store.py`: the Redis store (keys, scripts, round trips).

Re-exports orchestrator_flows.infra.redis_store, where the code lives.
"""

from orchestrator_flows.infra.redis_store import *  # noqa: F403
