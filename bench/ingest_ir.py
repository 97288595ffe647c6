"""Instructions PostgreSQL executes per paddle.ingest_event (make bench-ingest).

Deterministic where wall-clock and CPU time are not (a shared 2-core VM): a
single-user backend (`postgres --single`) runs a warm-up and then N more
`SELECT paddle.ingest_event(...)`, each its own transaction as with the
worker, under callgrind. Ir per event = (Ir(warm-up + N) - Ir(warm-up)) / N,
so start-up, catalog loading and plan caching cancel out.

Workloads (the bench's 13-event lifecycle cycle, each entity's events in a row):
  store-only    event types that are stored but not projected: the floor
                (reading and parsing the statement, jsonb_in, the event row)
  items-change  the bench's payloads: every snapshot of an entity carries
                other items (they come from different Paddle fixtures)
  items-repeat  each entity's snapshots carry the same items and line items,
                as a transaction's created/ready/paid/completed do in Paddle

Single-user mode reads the statement text byte by byte and parses the
payload literal: that part is in every workload, as is jsonb_in (the
worker's $7::jsonb). Compare workloads and versions, not absolute counts
with the worker's prepared statement.

--consumers N registers N consumers that want every event (paddle.consumers),
so that each stored event is also queued N times.
"""

import argparse
import json
import os
import re
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(BENCH_DIR), "tests"))
sys.path.insert(0, BENCH_DIR)

import events as bevents  # noqa: E402
from harness import Harness  # noqa: E402


def repeat_items(templates):
    """Every event type of a lifecycle gets the items of its last step."""
    out = dict(templates)
    for _, types in bevents.LIFECYCLES:
        last = json.loads(templates[types[-1]])["data"]
        for t in types:
            env = json.loads(templates[t])
            env["data"]["items"] = last.get("items")
            if "details" in env["data"] and "details" in last:
                env["data"]["details"]["line_items"] = last["details"].get("line_items")
            out[t] = json.dumps(env, separators=(",", ":"))
    return out


def statements(n, seed, endpoint, workload):
    q = Harness.lit
    lines = []
    for evt, etype, body in bevents.generate(n, seed=seed):
        at = json.loads(body)["occurred_at"]
        if workload == "store-only":
            etype = "x" + etype
        lines.append("SELECT paddle.ingest_event(%s, %s, %s, %s, %s, 'sandbox', %s::jsonb);"
                     % (q(evt), q(etype), q(at), q("ntf_" + evt[4:]), q(endpoint), q(body.decode())))
    return "\n".join(lines) + "\n"


def count_ir(H, path):
    p = subprocess.run(H._as_postgres([
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        os.path.join(H.pg_bin, "postgres"), "--single", "-D", H.pg_data, "paddlehook"]),
        stdin=open(path), capture_output=True, text=True, timeout=1800)
    m = re.search(r"Collected : (\d+)", p.stderr)
    if p.returncode != 0 or not m or "ERROR:" in p.stdout + p.stderr:
        raise RuntimeError("single-user run failed:\n%s\n%s" % (p.stdout[-2000:], p.stderr[-2000:]))
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warmup", type=int, default=52)
    ap.add_argument("--events", type=int, default=260)
    ap.add_argument("--consumers", type=int, default=0, help="consumers wanting every event")
    a = ap.parse_args()
    bevents.SPREAD = 1          # an entity's events close together
    plain = bevents.templates
    H = Harness(pg_fast=True, environment_name="paddlehook-bench")
    H.start(serve=False, nginx=False)
    results = {}
    try:
        endpoint = H.add_endpoint(name="ir", wait=False).id
        if a.consumers:
            H.sql("INSERT INTO paddle.consumers (name) SELECT 'bench_' || i FROM generate_series(1, %d) AS i"
                  % a.consumers)
        H.stop_postgres()
        for workload in ("store-only", "items-change", "items-repeat"):
            bevents.templates = (lambda s=(",", ":"): repeat_items(plain(s))) \
                if workload == "items-repeat" else plain
            ir = []
            for run, n in enumerate((a.warmup, a.warmup + a.events)):
                path = os.path.join(H.tmpdir, "%s-%d.sql" % (workload, run))
                with open(path, "w") as f:
                    f.write(statements(n, None, endpoint, workload))
                os.chmod(path, 0o644)
                ir.append(count_ir(H, path))
            results[workload] = (ir[1] - ir[0]) / a.events
            print("%-13s %9.0f Ir per event" % (workload, results[workload]), flush=True)
    finally:
        H.stop()
    floor = results["store-only"]
    for w in ("items-change", "items-repeat"):
        print("%-13s projection %9.0f Ir per event" % (w, results[w] - floor))


if __name__ == "__main__":
    main()
