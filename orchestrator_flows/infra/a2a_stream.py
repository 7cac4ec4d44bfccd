"""An agent's streamed answer (SendStreamingMessage, message/stream), read event by event.

`StreamAssembly` takes each event's JSON-RPC `result` in order, tells its listener the words as
they come and the task's state as it changes, and at the end gives the same `AgentReply` the
agent's one-shot answer would have given. Its text is exactly the words told, in order: the
chunks a client receives concatenate to the reply's text.

The text of a streamed answer is laid out as a one-shot answer's is (a2a_client): the parts of
one artifact joined as they are (an artifact grows by appended parts), each further artifact and
each message on a line of its own.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from orchestrator_flows.core.errors import AgentBadResponse, AgentTaskFailed
from orchestrator_flows.core.replies import NEEDS_INPUT, AgentReply

# Task states after which an agent sends nothing more on this stream.
FINAL_STATES = frozenset({"completed", "failed", "rejected", "canceled"}) | NEEDS_INPUT
FAILED = frozenset({"failed", "rejected", "canceled"})


class StreamListener(Protocol):
    """Hears a streamed answer as it arrives. Called on the event loop; must not block."""

    def status(self, state: str) -> None: ...

    def chunk(self, text: str) -> None: ...


class StreamAssembly:
    def __init__(self, listener: StreamListener) -> None:
        self._listener = listener
        self._said: list[str] = []
        self._data: list[Any] = []
        self._kind: Literal["message", "task"] | None = None
        self._task_id: str | None = None
        self._context_id: str | None = None
        self._state: str | None = None
        self._artifact: str | None = None  # the artifact the last words belonged to
        self._message: dict[str, Any] | None = None  # the last status message: a failure's words
        self.spoken = False  # some words reached the listener: the answer cannot be retried
        self.finished = False

    def take(self, result: Any) -> None:
        """One event's `result` (A2A 1.0: one wrapper key; 0.3: a `kind` tag)."""
        if not isinstance(result, dict):
            raise AgentBadResponse("agent stream event has no result object")
        if self.finished:
            raise AgentBadResponse("agent sent events after its final one")
        kind = result.get("kind")
        if isinstance(result.get("task"), dict) or kind == "task":
            self._take_task(result.get("task", result))
        elif isinstance(result.get("message"), dict) or kind == "message":
            self._take_message(result.get("message", result))
        elif isinstance(result.get("statusUpdate"), dict) or kind == "status-update":
            self._take_status(result.get("statusUpdate", result), final=result.get("final"))
        elif isinstance(result.get("artifactUpdate"), dict) or kind == "artifact-update":
            self._take_artifact(result.get("artifactUpdate", result))
        else:
            raise AgentBadResponse("agent stream event is none of task, message or update")

    def reply(self) -> AgentReply:
        """The whole answer, once the stream is over; faults as a one-shot answer's would be."""
        text = "".join(self._said)
        if self._kind == "message":
            return AgentReply(
                text=text,
                kind="message",
                data=self._data,
                task_id=self._task_id,
                context_id=self._context_id,
            )
        return task_reply(text, self._data, self._task_id, self._context_id, self._state)

    def _take_task(self, task: dict[str, Any]) -> None:
        self._kind = "task"
        self._ids(task.get("id"), task.get("contextId"))
        for artifact in task.get("artifacts") or []:
            if isinstance(artifact, dict):
                self._take_artifact({"artifact": artifact})
        status = task.get("status")
        self._take_status({"status": status} if isinstance(status, dict) else {}, final=None)

    def _take_message(self, message: dict[str, Any]) -> None:
        if self._kind is None:
            self._kind = "message"
            self._ids(message.get("taskId"), message.get("contextId"))
        self._say_parts(message.get("parts"), one_piece=False)
        self._artifact = None
        self.finished = True  # a message is the whole answer, or ends the task's stream

    def _take_status(self, update: dict[str, Any], final: Any) -> None:
        if self._kind is None:
            self._kind = "task"
        self._ids(update.get("taskId"), update.get("contextId"))
        status = update.get("status") if isinstance(update.get("status"), dict) else {}
        state = normalise_state(status.get("state"))
        if state is not None and state != self._state:
            self._state = state
            self._listener.status(state)
        if isinstance(status.get("message"), dict):
            self._say_parts(status["message"].get("parts"), one_piece=False)
            self._artifact = None
        if state in FINAL_STATES or final is True:
            self.finished = True

    def _take_artifact(self, update: dict[str, Any]) -> None:
        if self._kind is None:
            self._kind = "task"
        self._ids(update.get("taskId"), update.get("contextId"))
        artifact = update.get("artifact")
        if not isinstance(artifact, dict):
            raise AgentBadResponse("agent artifact update has no artifact")
        artifact_id = artifact.get("artifactId")
        continues = update.get("append") is True and artifact_id == self._artifact
        self._say_parts(artifact.get("parts"), one_piece=True, continues=continues)
        self._artifact = artifact_id if isinstance(artifact_id, str) else None

    def _say_parts(self, parts: Any, *, one_piece: bool, continues: bool = False) -> None:
        """Text parts are told, data parts kept. An artifact's parts are one piece of text (and
        continue the last artifact's when appended to it); a message's parts are lines."""
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                self._say(part["text"], new_line=not continues)
                continues = one_piece
            elif "data" in part:
                self._data.append(part["data"])

    def _say(self, text: str, *, new_line: bool) -> None:
        if not text:
            return
        if new_line and self._said:
            text = "\n" + text
        self._said.append(text)
        self.spoken = True
        self._listener.chunk(text)

    def _ids(self, task_id: Any, context_id: Any) -> None:
        if isinstance(task_id, str) and task_id:
            self._task_id = task_id
        if isinstance(context_id, str) and context_id:
            self._context_id = context_id


def task_reply(
    text: str, data: list[Any], task_id: str | None, context_id: str | None, state: str | None
) -> AgentReply:
    """A task's answer, streamed or not: the caller's to hear when the task completed or waits
    for the caller; a fault when it failed, or is unfinished (or unnamed) as it ends."""
    if not task_id or state is None:
        raise AgentBadResponse("agent task has no id or no state")
    if state in FAILED:
        raise AgentTaskFailed(
            f"agent task {state}: {text[:500]}".rstrip(": "), task_id=task_id, task_state=state
        )
    if state not in NEEDS_INPUT and state != "completed":
        raise AgentBadResponse(f"agent task is still {state}", task_id=task_id, task_state=state)
    return AgentReply(
        text=text,
        kind="task",
        data=data,
        task_id=task_id,
        context_id=context_id,
        task_state=state,
    )


def normalise_state(state: Any) -> str | None:
    """'TASK_STATE_INPUT_REQUIRED' (1.0) and 'input-required' (0.3) both become 'input_required'."""
    if not isinstance(state, str) or not state:
        return None
    return state.removeprefix("TASK_STATE_").lower().replace("-", "_")
