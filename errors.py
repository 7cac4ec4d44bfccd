"""Our error tree: each error knows its HTTP status and stable code; main.py renders them."""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class Unauthenticated(OrchestratorError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(OrchestratorError):
    status_code = 403
    code = "forbidden"


class CallStepLimit(OrchestratorError):
    """The call reached its step limit: a runaway client cannot grow a trail without bound."""

    status_code = 409
    code = "call_step_limit"


class CallSizeLimit(OrchestratorError):
    """The call holds as many bytes in Redis as one call may (MAX_CALL_BYTES): a runaway client
    cannot grow one without bound, however long its messages. Nothing is recorded."""

    status_code = 409
    code = "call_size_limit"


class CallNotFound(OrchestratorError):
    status_code = 404
    code = "call_not_found"


class IntentNotAllowed(OrchestratorError):
    status_code = 409
    code = "intent_not_allowed"


class UnknownIntent(OrchestratorError):
    status_code = 422
    code = "unknown_intent"


class CallComplete(OrchestratorError):
    status_code = 409
    code = "call_complete"


class AccountMismatch(OrchestratorError):
    status_code = 409
    code = "account_mismatch"


class TurnInProgress(OrchestratorError):
    status_code = 409
    code = "turn_in_progress"


class TurnConflict(OrchestratorError):
    """The call changed between reading it and committing the turn (e.g. it was deleted)."""

    status_code = 409
    code = "turn_conflict"


class IdempotencyKeyReused(OrchestratorError):
    """The Idempotency-Key was used before with a different request body."""

    status_code = 422
    code = "idempotency_key_reused"


class IdempotencyKeyInProgress(OrchestratorError):
    status_code = 409
    code = "idempotency_key_in_progress"


class StoreUnavailable(OrchestratorError):
    status_code = 503
    code = "store_unavailable"


class BodyTooLarge(OrchestratorError):
    status_code = 413
    code = "body_too_large"


class HeaderTooLarge(OrchestratorError):
    """Refused by the HTTP server itself (http_limits.py), before the app sees the request."""

    status_code = 431
    code = "header_too_large"


class TooManyConnections(OrchestratorError):
    """Refused by the HTTP server itself (http_limits.py), as the connection opens."""

    status_code = 503
    code = "too_many_connections"


class ConfigError(Exception):
    """The flow configuration is unusable; start-up stops with this message."""


class AgentFault(Exception):
    """An agent call went wrong. Not an HTTP error: the turn answers 200 with status "error"."""

    code = "agent_error"

    # Whether the agent may have acted on the request before this fault.
    may_have_acted = True

    def __init__(self, message: str, *, task_id: str | None = None, task_state: str | None = None):
        super().__init__(message)
        self.message = message
        self.task_id = task_id
        self.task_state = task_state
        self.attempts = 1


class AgentTimeout(AgentFault):
    code = "agent_timeout"


class AgentUnreachable(AgentFault):
    code = "agent_unreachable"
    may_have_acted = False  # the connection was never made


class AgentDisconnected(AgentFault):
    """The connection broke after the request was sent: the agent may have acted."""

    code = "agent_disconnected"


class AgentHttpError(AgentFault):
    code = "agent_http_error"
    # The agent (or its proxy) said it did not take the request on: safe to send again.
    NOT_ACTED = frozenset({429, 502, 503, 504})

    def __init__(self, message: str, *, status: int, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.may_have_acted = status not in self.NOT_ACTED


class AgentUnavailable(AgentFault):
    """The agent's circuit is open: it failed repeatedly, so it is not called for a while."""

    code = "agent_unavailable"
    may_have_acted = False


class AgentBadResponse(AgentFault):
    code = "agent_bad_response"


class AgentError(AgentFault):
    """The agent answered a JSON-RPC error."""

    code = "agent_error"


class AgentTaskFailed(AgentFault):
    """The agent's task ended failed, rejected or canceled."""

    code = "agent_task_failed"
