"""The design card's `models.py`: the API's requests and answers, and a call's records.

Re-exports orchestrator_flows.core.models, where the code lives.
"""

from orchestrator_flows.core.models import *  # noqa: F403
