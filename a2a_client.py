"""The design card's `a2a_client.py`: the A2A client: one caller turn to an agent over JSON-RPC 2.0.

Re-exports orchestrator_flows.infra.a2a_client, where the code lives.
"""

from orchestrator_flows.infra.a2a_client import *  # noqa: F403
