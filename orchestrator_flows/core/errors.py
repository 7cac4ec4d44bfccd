"""Our error tree: each error knows its HTTP status and stable code; web/error_answers.py renders
them. Each class's docstring says when it happens: OpenAPI documents every code from here
(web/api_docs.py), with an example answer built from the docstring and `example_details`."""

from __future__ import annotations

from typing import Any, ClassVar, Self

RETRY_AFTER = {"Retry-After": "seconds to wait before sending the same request again"}


class OrchestratorError(Exception):
    """Internal error; the turn was not recorded."""

    status_code = 500
    code = "internal_error"
    # For OpenAPI: the details an answer carries besides code and message, as an example, and
    # the response headers it sets ({name: meaning}).
    example_details: ClassVar[dict[str, Any]] = {}
    answer_headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The answer's body: `{"error": {"code", "message", ...details}}`."""
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class Unauthenticated(OrchestratorError):
    """No API key, or one that is not known."""

    status_code = 401
    code = "unauthenticated"
    answer_headers: ClassVar[dict[str, str]] = {
        "WWW-Authenticate": 'Bearer realm="orchestrator-flows" (error="invalid_token": unknown key)'
    }


class Forbidden(OrchestratorError):
    """The key's role may not do this; `required_roles` names the roles that may."""

    status_code = 403
    code = "forbidden"
    example_details: ClassVar[dict[str, Any]] = {"required_roles": ["admin"]}


class CallStepLimit(OrchestratorError):
    """The call reached its step limit (MAX_STEPS_PER_CALL): start a new call.

    A runaway client cannot grow a trail without bound."""

    status_code = 409
    code = "call_step_limit"
    example_details: ClassVar[dict[str, Any]] = {"call_identify_id": "CALL-001", "max_steps": 200}


class CallSizeLimit(OrchestratorError):
    """The call holds as many bytes in Redis as one call may (MAX_CALL_BYTES): a runaway client
    cannot grow one without bound, however long its messages. Nothing is recorded."""

    status_code = 409
    code = "call_size_limit"
    example_details: ClassVar[dict[str, Any]] = {
        "call_identify_id": "CALL-001",
        "max_call_bytes": 1048576,
        "agent_called": False,
    }


class CallNotFound(OrchestratorError):
    """No such call: never started, deleted, or expired."""

    status_code = 404
    code = "call_not_found"
    example_details: ClassVar[dict[str, Any]] = {"call_identify_id": "CALL-001"}

    @classmethod
    def of(cls, call_id: str) -> Self:
        return cls(
            f"no call {call_id!r} (never started, deleted or expired)", call_identify_id=call_id
        )


class IntentNotAllowed(OrchestratorError):
    """The intent belongs to another stage than the call's; `allowed_intents` are this stage's."""

    status_code = 409
    code = "intent_not_allowed"
    example_details: ClassVar[dict[str, Any]] = {
        "current_flow_id": 1,
        "current_flow_label": "GREETING",
        "intent_flow_id": 3,
        "allowed_intents": ["greeting", "welcome"],
    }


class UnknownIntent(OrchestratorError):
    """No stage knows the intent, and no fallback agent is configured."""

    status_code = 422
    code = "unknown_intent"
    example_details: ClassVar[dict[str, Any]] = {
        "current_flow_id": 1,
        "current_flow_label": "GREETING",
        "allowed_intents": ["greeting", "welcome"],
    }


class IntentRequired(OrchestratorError):
    """The turn has no intent, and the call's stage cannot classify one: none of its intents
    has examples in the flows file and no classifier agent is configured. Send `intent`."""

    status_code = 422
    code = "intent_required"
    example_details: ClassVar[dict[str, Any]] = {
        "current_flow_id": 2,
        "current_flow_label": "AUTHENTICATION",
        "allowed_intents": ["authenticate", "otp_verify", "verify_identity"],
    }


class NoIntentMatched(OrchestratorError):
    """The classifier found no intent of the call's stage in what the caller said, and no
    fallback agent is configured to answer such turns. Nothing was recorded."""

    status_code = 422
    code = "no_intent_matched"
    example_details: ClassVar[dict[str, Any]] = {
        "current_flow_id": 3,
        "current_flow_label": "INTENT_CAPTURE",
        "allowed_intents": ["billing_inquiry", "refund_request"],
        "no_match_reason": "low_confidence",
        "intent_alternatives": [{"intent": "refund_request", "confidence": 0.21}],
    }


class CallComplete(OrchestratorError):
    """The call is complete (it finished stage 5): start a new call for a new conversation."""

    status_code = 409
    code = "call_complete"
    example_details: ClassVar[dict[str, Any]] = {"call_identify_id": "CALL-001"}


class AccountMismatch(OrchestratorError):
    """The call belongs to another account than the turn's `account_id`."""

    status_code = 409
    code = "account_mismatch"
    example_details: ClassVar[dict[str, Any]] = {"call_identify_id": "CALL-001"}


class TurnInProgress(OrchestratorError):
    """Another turn of this call is running: retry after Retry-After seconds."""

    status_code = 409
    code = "turn_in_progress"
    answer_headers: ClassVar[dict[str, str]] = RETRY_AFTER


class TurnInProgressOnSocket(OrchestratorError):
    """A turn frame arrived on a call's socket (GET /calls/{id}/ws) while that socket's previous
    turn was still running: the frame was dropped and the running turn goes on. Send the next
    turn after the running one's `turn` event."""

    status_code = 409
    code = "turn_in_progress_on_socket"
    example_details: ClassVar[dict[str, Any]] = {"call_identify_id": "CALL-001"}


class TurnConflict(OrchestratorError):
    """The call changed while the turn ran (e.g. it was deleted); nothing was recorded."""

    status_code = 409
    code = "turn_conflict"


class IdempotencyKeyReused(OrchestratorError):
    """This Idempotency-Key was used before for a different request: use a new key."""

    status_code = 422
    code = "idempotency_key_reused"
    example_details: ClassVar[dict[str, Any]] = {"idempotency_key": "turn-7f3a"}


class IdempotencyKeyInProgress(OrchestratorError):
    """The request with this Idempotency-Key is still running: retry after Retry-After."""

    status_code = 409
    code = "idempotency_key_in_progress"
    answer_headers: ClassVar[dict[str, str]] = RETRY_AFTER


class StoreUnavailable(OrchestratorError):
    """The session store (Redis) is unavailable: nothing was half-written; retry after
    Retry-After, with the same Idempotency-Key."""

    status_code = 503
    code = "store_unavailable"
    example_details: ClassVar[dict[str, Any]] = {"reason": "ConnectionError"}
    answer_headers: ClassVar[dict[str, str]] = RETRY_AFTER


class StoredRecordUnreadable(OrchestratorError):
    """A record of the call in Redis is in a format this release cannot read; nothing was
    changed. `reason` says why: `newer_version` (written by a newer release during a rolling
    deploy: retry after Retry-After, when an instance of the newer release may answer) or
    `malformed` (damaged: an operator must look; retrying does not help)."""

    status_code = 503
    code = "store_record_unreadable"
    example_details: ClassVar[dict[str, Any]] = {
        "call_identify_id": "CALL-001",
        "record": "state",
        "version": 2,
        "reason": "newer_version",
    }
    answer_headers: ClassVar[dict[str, str]] = RETRY_AFTER


class Overloaded(OrchestratorError):
    """This worker holds as many turns as it may (MAX_TURNS_IN_FLIGHT): the turn was answered
    at once, before Redis or any agent was asked, and nothing was recorded. Send it again
    after `Retry-After` (another replica may take it now)."""

    status_code = 503
    code = "overloaded"
    answer_headers: ClassVar[dict[str, str]] = RETRY_AFTER
    example_details: ClassVar[dict[str, Any]] = {"max_turns_in_flight": 1500}


class BodyTooLarge(OrchestratorError):
    """The request body is over the limit (64 KiB); it was not read."""

    status_code = 413
    code = "body_too_large"
    example_details: ClassVar[dict[str, Any]] = {"limit": 65536}


class InvalidRequest(OrchestratorError):
    """The body, a header or the path is malformed: `fields` names each problem (never the
    value sent)."""

    status_code = 422
    code = "validation_error"
    example_details: ClassVar[dict[str, Any]] = {
        "fields": [{"loc": ["body", "intent"], "type": "missing", "message": "Field required"}]
    }


class UpgradeRequired(OrchestratorError):
    """A call's socket (GET /calls/{id}/ws) is a WebSocket: open it with a WebSocket handshake
    (`Upgrade: websocket`), not a plain HTTP request."""

    status_code = 426
    code = "upgrade_required"
    answer_headers: ClassVar[dict[str, str]] = {"Upgrade": "websocket"}


class HeaderTooLarge(OrchestratorError):
    """Refused by the HTTP server itself (web/http_limits.py), before the app sees the request."""

    status_code = 431
    code = "header_too_large"
    example_details: ClassVar[dict[str, Any]] = {"limit": 16384}


class TooManyConnections(OrchestratorError):
    """Refused by the HTTP server itself (web/http_limits.py), as the connection opens."""

    status_code = 503
    code = "too_many_connections"


class ConfigError(Exception):
    """The flow configuration is unusable; start-up stops with this message."""


class AgentFault(Exception):
    """An agent call went wrong. Not an HTTP error: the turn answers 200 with status "error"
    and the fault's code in `response.error.code`; each subclass's docstring says when."""

    code = "agent_error"

    # Whether the agent may have acted on the request before this fault.
    may_have_acted = True

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        task_state: str | None = None,
        attempts: int = 1,
    ):
        super().__init__(message)
        self.message = message
        self.task_id = task_id
        self.task_state = task_state
        self.attempts = attempts  # calls made to the agent, this fault ending the last one

    def after(self, attempts: int) -> Self:
        """The same fault as the outcome of `attempts` calls to the agent."""
        return type(self)(
            self.message, task_id=self.task_id, task_state=self.task_state, attempts=attempts
        )


class AgentTimeout(AgentFault):
    """The agent did not answer within A2A_TIMEOUT_SEC."""

    code = "agent_timeout"


class AgentUnreachable(AgentFault):
    """No connection could be made to the agent (refused, or no such host)."""

    code = "agent_unreachable"
    may_have_acted = False  # the connection was never made


class AgentDisconnected(AgentFault):
    """The connection broke after the request was sent: the agent may have acted."""

    code = "agent_disconnected"


class AgentHttpError(AgentFault):
    """The agent answered an HTTP error status."""

    code = "agent_http_error"
    # The agent (or its proxy) said it did not take the request on: safe to send again.
    NOT_ACTED = frozenset({429, 502, 503, 504})

    def __init__(
        self, message: str, *, status: int, retry_after: float | None = None, attempts: int = 1
    ):
        super().__init__(message, attempts=attempts)
        self.status = status
        self.retry_after = retry_after
        self.may_have_acted = status not in self.NOT_ACTED

    def after(self, attempts: int) -> Self:
        return type(self)(
            self.message, status=self.status, retry_after=self.retry_after, attempts=attempts
        )


class AgentUnavailable(AgentFault):
    """The agent's circuit is open: it failed repeatedly, so it is not called for a while.
    No attempt was made."""

    code = "agent_unavailable"
    may_have_acted = False


class AgentBadResponse(AgentFault):
    """The agent's answer is not a JSON-RPC answer we understand, or is over 1 MiB."""

    code = "agent_bad_response"


class AgentError(AgentFault):
    """The agent answered a JSON-RPC error."""

    # Its code is AgentFault's own, agent_error.


class AgentTaskFailed(AgentFault):
    """The agent's task ended failed, rejected or canceled."""

    code = "agent_task_failed"
