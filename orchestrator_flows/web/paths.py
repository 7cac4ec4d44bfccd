"""Path parameters the API and the console share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from orchestrator_flows.core.models import ID_PATTERN

CallIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
