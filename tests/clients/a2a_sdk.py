"""Drives an A2A 1.0 server with the official Python client (a2a-sdk) and prints what it saw,
as JSON, for the integration tests (tests/suites/a2a.rs) to check.

    python a2a_sdk.py BASE_URL SCENARIO [ARGS...]

BASE_URL is the A2A endpoint (its card is BASE_URL/.well-known/agent-card.json).
Scenarios:
    flow          card, blocking send (and the same message again), a context continued,
                  non-blocking send, subscribe, get (historyLength 1), stream, cancel (and
                  again), errors
    drop PROMPT N stream a message, drop the stream after N events, subscribe to the task,
                  and assemble the answer from both
Environment: A2A_TOKEN, a bearer token to send.
"""

import asyncio
import json
import os
import sys
import uuid

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils import errors


def message(text, context_id=None, message_id=None):
    m = Message(message_id=message_id or str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    if context_id:
        m.context_id = context_id
    return m


def state(task):
    return TaskState.Name(task.status.state)


def artifact_text(task):
    return "".join(p.text for a in task.artifacts for p in a.parts)


def failure(exc):
    return {"class": type(exc).__name__, "message": getattr(exc, "message", str(exc))}


async def clients(base):
    token = os.environ.get("A2A_TOKEN")
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=120)
    card = await A2ACardResolver(http, base).get_agent_card()
    blocking = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
    streaming = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)
    return http, card, blocking, streaming


async def send(client, msg, immediately=False, history=None):
    config = SendMessageConfiguration(return_immediately=immediately)
    if history is not None:
        config.history_length = history
    events = [e async for e in client.send_message(SendMessageRequest(message=msg, configuration=config))]
    return events[0].task


def fold(assembled, event):
    """Folds a stream event into (kinds, text, last state) as a client would assemble them."""
    kind = event.WhichOneof("payload")
    assembled["kinds"].append(kind)
    if kind == "artifact_update":
        update = event.artifact_update
        text = "".join(p.text for p in update.artifact.parts)
        assembled["text"] = assembled["text"] + text if update.append else text
    elif kind == "status_update":
        assembled["state"] = TaskState.Name(event.status_update.status.state)
        assembled["context"] = event.status_update.context_id
    elif kind == "task":
        assembled["task_id"] = event.task.id
        assembled["state"] = state(event.task)
        assembled["text"] = artifact_text(event.task) or assembled["text"]


async def flow(base):
    http, card, blocking, streaming = await clients(base)
    out = {"card": {"name": card.name, "urls": [i.url for i in card.supported_interfaces], "streaming": card.capabilities.streaming,
                    "skills": [s.id for s in card.skills]}}
    first = message("hello")
    task = await send(blocking, first)
    out["blocking"] = {"id": task.id, "state": state(task), "text": artifact_text(task), "context": task.context_id,
                       "history": [Role.Name(m.role) for m in task.history]}
    again = await send(blocking, first)
    out["again"] = {"id": again.id, "text": artifact_text(again), "context": again.context_id,
                    "history_contexts": sorted({m.context_id for m in again.history})}
    follow = await send(blocking, message("and then?", context_id=task.context_id))
    out["continued"] = {"context": follow.context_id, "text": artifact_text(follow)}

    pending = await send(blocking, message("take your time"), immediately=True)
    out["non_blocking"] = {"id": pending.id, "state": state(pending)}
    if state(pending) not in ("TASK_STATE_COMPLETED", "TASK_STATE_FAILED"):
        assembled = {"kinds": [], "text": "", "state": None}
        async for ev in streaming.subscribe(SubscribeToTaskRequest(id=pending.id)):
            fold(assembled, ev)
        out["subscribed"] = assembled
    got = await blocking.get_task(GetTaskRequest(id=pending.id, history_length=1))
    out["got"] = {"state": state(got), "text": artifact_text(got), "history": len(got.history)}
    whole = await blocking.get_task(GetTaskRequest(id=pending.id))
    out["got_whole"] = {"history": [Role.Name(m.role) for m in whole.history]}

    assembled = {"kinds": [], "text": "", "state": None}
    async for ev in streaming.send_message(SendMessageRequest(message=message("stream this"))):
        fold(assembled, ev)
    out["streamed"] = assembled

    doomed = await send(blocking, message("cancel me"), immediately=True)
    out["cancel"] = {"before": state(doomed)}
    try:
        canceled = await blocking.cancel_task(CancelTaskRequest(id=doomed.id))
        out["cancel"]["after"] = state(canceled)
    except errors.A2AError as e:
        out["cancel"]["after"] = failure(e)
    try:
        await blocking.cancel_task(CancelTaskRequest(id=doomed.id))
        out["cancel"]["again"] = None
    except errors.A2AError as e:
        out["cancel"]["again"] = failure(e)
    later = await blocking.get_task(GetTaskRequest(id=doomed.id))
    out["cancel"]["later"] = state(later)

    try:
        await blocking.get_task(GetTaskRequest(id="task-no-such"))
        out["unknown"] = None
    except errors.A2AError as e:
        out["unknown"] = failure(e)
    try:
        async for _ in streaming.subscribe(SubscribeToTaskRequest(id=task.id)):
            pass
        out["subscribe_ended"] = None
    except errors.A2AError as e:
        out["subscribe_ended"] = failure(e)
    await http.aclose()
    return out


async def drop(base, prompt, n):
    http, _card, _blocking, streaming = await clients(base)
    assembled = {"kinds": [], "text": "", "state": None}
    stream = streaming.send_message(SendMessageRequest(message=message(prompt)))
    async for ev in stream:
        fold(assembled, ev)
        if len(assembled["kinds"]) >= int(n):
            break
    await stream.aclose()
    before = dict(assembled, kinds=list(assembled["kinds"]))
    async for ev in streaming.subscribe(SubscribeToTaskRequest(id=assembled["task_id"])):
        fold(assembled, ev)
    await http.aclose()
    return {"before": before, "after": assembled}


if __name__ == "__main__":
    base, scenario, *args = sys.argv[1:]
    result = asyncio.run({"flow": flow, "drop": drop}[scenario](base, *args))
    print(json.dumps(result))
