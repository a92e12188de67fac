#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver for the tests: POST /v1/traces, protobuf or JSON, optionally gzip.

Every span received is appended to --out as one JSON object per line (flattened: hex ids, kind
and status as names, attributes as plain JSON values, the resource's and the scope's attributes
alongside). GET /spans answers the spans received so far as a JSON array (from memory), GET
/count their number.

    pip install opentelemetry-proto          # pulls protobuf (scripts/requirements-test.txt)
    python3 receiver.py --port 0 --out /tmp/spans.jsonl
    # prints "listening on 127.0.0.1:PORT" once ready; point the exporter at
    # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:PORT/v1/traces

--status CODE answers every export with that HTTP status (e.g. 503 to test retries/give-up;
--retry-after N adds that header),
--delay-ms N waits before answering (to test the exporter's timeout).
"""

import argparse
import base64
import gzip
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

KIND = {v: k.removeprefix("SPAN_KIND_") for k, v in Span.SpanKind.items()}
STATUS = {v: k.removeprefix("STATUS_CODE_") for k, v in Status.StatusCode.items()}


def any_value(v):
    """An OTLP AnyValue as a plain JSON value."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attrs(v.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which)  # string_value, bool_value, int_value, double_value


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def hex_id(b):
    return b.hex() if b else None


def flatten(req):
    """The spans of an ExportTraceServiceRequest as flat dicts."""
    out = []
    for rs in req.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append({
                    "trace_id": hex_id(s.trace_id),
                    "span_id": hex_id(s.span_id),
                    "parent_span_id": hex_id(s.parent_span_id),
                    "trace_state": s.trace_state or None,
                    "flags": s.flags,
                    "name": s.name,
                    "kind": KIND.get(s.kind, str(s.kind)),
                    "start_time_unix_nano": s.start_time_unix_nano,
                    "end_time_unix_nano": s.end_time_unix_nano,
                    "attributes": attrs(s.attributes),
                    "events": [
                        {"name": e.name, "time_unix_nano": e.time_unix_nano,
                         "attributes": attrs(e.attributes)}
                        for e in s.events
                    ],
                    "links": [
                        {"trace_id": hex_id(l.trace_id), "span_id": hex_id(l.span_id),
                         "attributes": attrs(l.attributes)}
                        for l in s.links
                    ],
                    "status": {"code": STATUS.get(s.status.code, str(s.status.code)),
                               "message": s.status.message or None},
                    "scope": {"name": ss.scope.name, "version": ss.scope.version or None},
                    "resource": resource,
                    "received_unix_nano": time.time_ns(),
                })
    return out


def hex_ids_to_base64(obj):
    """OTLP/JSON writes traceId/spanId/parentSpanId as hex; protobuf's JSON parser wants base64."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id") \
                    and isinstance(v, str):
                obj[k] = base64.b64encode(bytes.fromhex(v)).decode() if v else ""
            else:
                hex_ids_to_base64(v)
    elif isinstance(obj, list):
        for x in obj:
            hex_ids_to_base64(x)
    return obj


def decode(body, content_type):
    req = ExportTraceServiceRequest()
    if content_type.startswith("application/json"):
        json_format.ParseDict(hex_ids_to_base64(json.loads(body)), req, ignore_unknown_fields=True)
    else:  # application/x-protobuf (OTLP/HTTP's binary encoding)
        req.ParseFromString(body)
    return req


class Store:
    def __init__(self, path):
        self.path = path
        self.spans = []
        self.lock = threading.Lock()

    def add(self, spans):
        with self.lock:
            self.spans.extend(spans)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as f:
                    for s in spans:
                        f.write(json.dumps(s, sort_keys=True) + "\n")


def make_handler(store, status, delay_ms, retry_after=None):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def reply(self, code, body, content_type):
            self.send_response(code)
            if retry_after is not None and code != 200:
                self.send_header("Retry-After", str(retry_after))
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/count":
                with store.lock:
                    body = json.dumps({"spans": len(store.spans)}).encode()
                return self.reply(200, body, "application/json")
            if path != "/spans":
                return self.reply(404, b"not found\n", "text/plain")
            with store.lock:
                body = json.dumps(store.spans).encode()
            self.reply(200, body, "application/json")

        def do_POST(self):
            if self.path.split("?")[0] != "/v1/traces":
                return self.reply(404, b"not found\n", "text/plain")
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            ctype = self.headers.get("Content-Type", "application/x-protobuf").lower()
            as_json = ctype.startswith("application/json")
            if delay_ms:
                time.sleep(delay_ms / 1000)
            if status != 200:
                return self.reply(status, b"", "application/json" if as_json else "application/x-protobuf")
            try:
                req = decode(body, ctype)
            except Exception as e:  # a malformed body is a permanent error: 400
                return self.reply(400, f"bad request: {e}\n".encode(), "text/plain")
            store.add(flatten(req))
            if as_json:
                self.reply(200, b"{}", "application/json")
            else:
                self.reply(200, ExportTraceServiceResponse().SerializeToString(),
                           "application/x-protobuf")

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4318, help="0 picks a free port")
    p.add_argument("--out", default="", help="JSON-lines file the spans are appended to")
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--retry-after", type=int, default=None,
                   help="with --status: a Retry-After header (seconds) on every refusal")
    a = p.parse_args()
    store = Store(a.out)
    srv = ThreadingHTTPServer((a.host, a.port), make_handler(store, a.status, a.delay_ms, a.retry_after))
    print(f"listening on {a.host}:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
