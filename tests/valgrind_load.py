#!/usr/bin/env python3
"""The driver of `make valgrind`: a one-worker stack (PADDLEHOOK_BIN wraps serve in memcheck) and N mixed good and
bad requests, each checked against the answer it must get.

    PADDLEHOOK_BIN=... python3 tests/valgrind_load.py N
"""

import collections
import glob
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import Harness, make_event, new_secret, paddle_id, sample_subscription  # noqa: E402
from hostile import event  # noqa: E402


def valgrind_load(total):
    """Drives a one-worker stack with `total` mixed requests; returns 0 when
    every answer was the expected one."""
    h = Harness(workers=1, max_body=262144)
    results = collections.Counter()
    wrong = []
    h.start()
    try:
        ep = h.add_endpoint()
        live = h.add_endpoint(environment="live")
        off = h.add_endpoint()
        h.disable_endpoint(off)
        fx = harness.fixtures_dir()
        envelopes = []
        for path in sorted(glob.glob(os.path.join(fx, "envelopes", "*.json"))) if fx else []:
            with open(path, "rb") as f:
                envelopes.append(json.loads(f.read()))
        if not envelopes:
            envelopes = [make_event("subscription.created", sample_subscription(), as_dict=True)]
        stored = []

        def good(i):
            env = dict(envelopes[i % len(envelopes)], event_id=paddle_id("evt"))
            body = json.dumps(env).encode()
            stored.append(body)
            return h.post_event(ep if i % 3 else live, body), (200, None)

        def signed(body, target=None):
            return h.post_event(target or ep, body)

        deep = event().replace(b'"data":{', b'"data":{"d":' + b"[" * 100 + b"]" * 100 + b",", 1)
        kinds = [
            good,
            lambda i: (h.post_event(ep, stored[-1] if stored else event()),
                       (200, None)),
            lambda i: (h.post_event(ep, event(), secret=new_secret()), (401, "invalid_signature")),
            lambda i: (h.post_event(ep, event(), ts=int(time.time()) - 3600), (401, "timestamp_out_of_range")),
            lambda i: (signed(event()[:-2]), (400, "malformed_json")),
            lambda i: (signed(deep), (400, "nesting_too_deep")),
            lambda i: (signed(event().replace(b'"data":{', b'"data":{"z":"\\u0000",', 1)), (400, "unsupported_json")),
            lambda i: (signed(b'{"event_id":"%s","data":{}}' % paddle_id("evt").encode()), (400, "missing_field")),
            lambda i: (h.post_event(paddle_id("ep"), event(), secret=new_secret()), (404, "unknown_endpoint")),
            lambda i: (h.post_event(off, event()), (410, "endpoint_disabled")),
            lambda i: (h.get("/paddle/healthz"), (200, None)),
            lambda i: (h.get(ep.path), (405, "method_not_allowed")),
            lambda i: (signed(make_event("customer.created", {"id": paddle_id("ctm"), "p": "x" * 300000})),
                       (413, "body_too_large")),
            lambda i: (h.post_event(ep, event(), signature="ts=%d;%s" % (
                time.time(), ";".join("h1=" + os.urandom(32).hex() for _ in range(100)))),
                (401, "invalid_signature")),
            lambda i: (h.get("/paddle/metrics"), (200, None)),
            good,
            good,
        ]
        started = time.monotonic()
        for i in range(total):
            if i and i % 500 == 0:
                h.rotate_endpoint(live)                  # NOTIFY: endpoints reloaded
                h.retire_secrets(live)
                os.kill(h.serve_pid(), signal.SIGHUP)
                print("valgrind-load: %d/%d requests, %.0f s" % (i, total, time.monotonic() - started),
                      flush=True)
            r, (status, code) = kinds[i % len(kinds)](i)
            j = r.json()
            results[(r.status, r.error or (j.get("status") if isinstance(j, dict) else "(text)"))] += 1
            if r.status != status or (code is not None and r.error != code):
                wrong.append((i, status, code, r))
        print("valgrind-load: %d requests in %.0f s" % (total, time.monotonic() - started))
        for (status, code), n in sorted(results.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            print("  %5d  %s %s" % (n, status, code or ""))
        for w in wrong[:20]:
            print("unexpected answer to request %d: wanted %s %s, got %r" % w)
    finally:
        h.stop()
    return 1 if wrong else 0


def _main(argv):
    if len(argv) != 1 or not argv[0].isdigit():
        sys.stderr.write("usage: valgrind_load.py N\n")
        return 2
    return valgrind_load(int(argv[0]))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
