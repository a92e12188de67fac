"""Drives an OpenAI-compatible endpoint with the official `openai` Python SDK and prints what
the SDK saw, as JSON, for the integration tests (tests/suites/openai.rs) to check.

    python openai_sdk.py BASE_URL SCENARIO [ARGS...]

BASE_URL is what a user gives the SDK as `base_url` (e.g. http://127.0.0.1:PORT/api/v1/openai/v1).
Scenarios:
    basic PROMPT          models, create (sync/async, streamed and not), raw headers, errors
    conversation N        an N-turn conversation, the client keeping the messages
    error API_KEY         one create with this key ("-": a key that is no token, "none": no
                          Authorization header); the exception
    headers PROMPT K=V..  one create with extra headers; the answer and response headers
    stream_headers PROMPT K=V..  the same streamed: the text, or the exception raised
"""

import asyncio
import json
import sys

import openai
from openai import AsyncOpenAI, OpenAI


def client(base, key="test-key", **extra):
    return OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60, **extra)


def failure(call):
    try:
        call()
    except openai.APIStatusError as e:
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "code": e.code,
            "type": e.type,
            "param": e.param,
            "message": e.message,
            "request_id": e.request_id,
            "retry_after": e.response.headers.get("retry-after"),
        }
    except openai.APIError as e:
        return {"class": type(e).__name__, "message": e.message}
    return None


def basic(base, prompt):
    c = client(base)
    out = {}
    out["models"] = [m.id for m in c.models.list()]
    out["retrieved"] = c.models.retrieve(out["models"][0]).id
    messages = [{"role": "user", "content": prompt}]
    r = c.chat.completions.create(model="default", messages=messages)
    out["create"] = {
        "id": r.id,
        "object": r.object,
        "model": r.model,
        "content": r.choices[0].message.content,
        "role": r.choices[0].message.role,
        "finish_reason": r.choices[0].finish_reason,
        "usage": r.usage.model_dump() if r.usage else None,
    }
    raw = c.chat.completions.with_raw_response.create(model=out["models"][0], messages=messages)
    out["raw"] = {
        "status": raw.status_code,
        "request_id": raw.request_id,
        "agent": raw.headers.get("x-agent"),
        "content_type": raw.headers.get("content-type"),
        "content": raw.parse().choices[0].message.content,
    }
    parts, finishes, usage, chunks = [], [], None, 0
    for ch in c.chat.completions.create(
        model="default", messages=messages, stream=True, stream_options={"include_usage": True}
    ):
        chunks += 1
        for choice in ch.choices:
            parts.append(choice.delta.content or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
        if ch.usage:
            usage = ch.usage.model_dump()
    out["stream"] = {"content": "".join(parts), "finish_reasons": finishes, "usage": usage, "chunks": chunks}
    with c.chat.completions.stream(model="default", messages=messages) as stream:
        out["stream_helper"] = stream.get_final_completion().choices[0].message.content
    with c.chat.completions.with_streaming_response.create(
        model="default", messages=messages, stream=True
    ) as response:
        out["streaming_response"] = {
            "content_type": response.headers.get("content-type"),
            "request_id": response.headers.get("x-request-id"),
            "done": any(line == "data: [DONE]" for line in response.iter_lines()),
        }

    async def run_async():
        a = AsyncOpenAI(base_url=base, api_key="test-key", max_retries=0, timeout=60)
        r = await a.chat.completions.create(model="default", messages=messages)
        text = ""
        async for ch in await a.chat.completions.create(model="default", messages=messages, stream=True):
            for choice in ch.choices:
                text += choice.delta.content or ""
        await a.close()
        return {"content": r.choices[0].message.content, "stream": text}

    out["async"] = asyncio.run(run_async())
    out["unknown_model"] = failure(
        lambda: c.chat.completions.create(model="no-such-agent", messages=messages)
    )
    out["two_choices"] = failure(lambda: c.chat.completions.create(model="default", messages=messages, n=2))
    out["unknown_model_retrieve"] = failure(lambda: c.models.retrieve("no-such-agent"))
    return out


def conversation(base, turns):
    c = client(base)
    messages = [{"role": "system", "content": "Answer in one line."}]
    replies = []
    for i in range(int(turns)):
        messages.append({"role": "user", "content": f"turn {i + 1}"})
        stream = i % 2 == 1
        if stream:
            text = ""
            for ch in c.chat.completions.create(model="default", messages=messages, stream=True):
                for choice in ch.choices:
                    text += choice.delta.content or ""
        else:
            text = c.chat.completions.create(model="default", messages=messages).choices[0].message.content
        replies.append(text)
        messages.append({"role": "assistant", "content": text})
    return {"replies": replies}


def error(base, key):
    c = client(base, key="placeholder" if key in ("-", "none") else key)
    # "none": the request goes without an Authorization header at all.
    extra = {"Authorization": openai.Omit()} if key == "none" else None
    return failure(
        lambda: c.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], extra_headers=extra
        )
    )


def headers(base, prompt, *pairs):
    extra = dict(pair.split("=", 1) for pair in pairs)
    c = client(base, default_headers=extra)
    raw = c.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": prompt}]
    )
    return {
        "content": raw.parse().choices[0].message.content,
        "request_id": raw.headers.get("x-request-id"),
        "session_id": raw.headers.get("x-session-id"),
    }


def stream_headers(base, prompt, *pairs):
    """One streamed create with extra headers: its text, or the exception it raised."""
    extra = dict(pair.split("=", 1) for pair in pairs)
    c = client(base, default_headers=extra)

    def run():
        text = ""
        for ch in c.chat.completions.create(
            model="default", messages=[{"role": "user", "content": prompt}], stream=True
        ):
            for choice in ch.choices:
                text += choice.delta.content or ""
        return text

    caught = failure(run)
    return caught if caught else {"content": run()}


if __name__ == "__main__":
    base, scenario, *args = sys.argv[1:]
    scenarios = {
        "basic": basic,
        "conversation": conversation,
        "error": error,
        "headers": headers,
        "stream_headers": stream_headers,
    }
    result = scenarios[scenario](
        base, *args
    )
    print(json.dumps(result))
