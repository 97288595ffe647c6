"""Paddle-shaped benchmark events for `make bench`.

Every benchmark (pgbench ceiling, paddlehook through nginx, the Node.js peer)
uses the same payload shapes: the real subscription and transaction
notifications from Paddle's SDK fixtures (tests/fixtures/paddle/envelopes),
compact JSON as Paddle sends it, 2.9-6.5 KB, with fresh ids.

Events come in entity lifecycles, so about two thirds of them update a row
that an earlier event created (ON CONFLICT DO UPDATE + replacing the items),
as in production:

    subscription A   created -> activated -> updated
    subscription B   updated -> past_due -> canceled
    transaction A    created -> ready -> paid -> completed
    transaction B    billed -> payment_failed -> past_due

One "cycle" is these four entities, 13 events, for one customer.  Events of
one entity are spread about 2,000 positions apart in the replay file (so
concurrent connections rarely touch the same row at once) and occurred_at
grows with the file position (so every later snapshot really applies).

Replay file: one line per notification, "<Paddle-Signature>\\t<body>\\n".
"""

import json
import os
import random
import re
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

from paddledata import (fixtures_dir, py_sign, sample_subscription,  # noqa: E402
                        sample_transaction)

LIFECYCLES = (
    ("sub", ("subscription.created", "subscription.activated", "subscription.updated")),
    ("sub", ("subscription.updated", "subscription.past_due", "subscription.canceled")),
    ("txn", ("transaction.created", "transaction.ready", "transaction.paid",
             "transaction.completed")),
    ("txn", ("transaction.billed", "transaction.payment_failed", "transaction.past_due")),
)
CYCLE = [(l, k, kind, t) for l, (kind, types) in enumerate(LIFECYCLES)
         for k, t in enumerate(types)]          # 13 steps
SPREAD = 160          # cycles between two events of one entity (~2,000 lines)

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def _template(event_type, kind):
    """The envelope for event_type with placeholders, as a dict."""
    fx = fixtures_dir()
    env = None
    if fx:
        path = os.path.join(fx, "envelopes", event_type + ".json")
        if os.path.exists(path):
            with open(path) as f:
                env = json.load(f)
    if env is None:  # no fixtures: the harness's own Paddle-shaped snapshots
        if kind == "sub":
            data = sample_subscription(items=((3240, 10), (10800, 1), (1900, 1)))
        else:
            data = sample_transaction(items=((3000, 10), (10000, 1), (19900, 1)),
                                      subscription_id="@SUB@")
        env = {"event_id": "", "event_type": event_type, "occurred_at": "",
               "notification_id": "", "data": data}
    env = dict(env)
    env["event_id"] = "@EVT@"
    env["event_type"] = event_type
    env["occurred_at"] = "@AT@"
    env["notification_id"] = "@NTF@"
    data = dict(env["data"])
    data["id"] = "@ID@"
    if "customer_id" in data:
        data["customer_id"] = "@CTM@"
    if kind == "txn" and "subscription_id" in data:
        data["subscription_id"] = "@SUB@"
    if kind == "sub" and "transaction_id" in data:
        data["transaction_id"] = None
    env["data"] = data
    return env


def templates(separators=(",", ":")):
    """{event_type: JSON text with @EVT@ @NTF@ @AT@ @ID@ @CTM@ @SUB@}."""
    out = {}
    for kind, types in LIFECYCLES:
        for t in types:
            if t not in out:
                out[t] = json.dumps(_template(t, kind), separators=separators)
    return out


class Ids:
    """Paddle-style ids (prefix_ + 26 Crockford base32 chars), unique per run."""

    def __init__(self, seed=None):
        self.rng = random.Random(seed if seed is not None else time.time_ns())
        ms = int(time.time() * 1000)
        head = ""
        for _ in range(10):
            head = _CROCKFORD[ms % 32] + head
            ms //= 32
        self.head = head

    def new(self, prefix):
        r = self.rng.getrandbits(80)
        tail = "".join(_CROCKFORD[(r >> (5 * i)) & 31] for i in range(16))
        return "%s_%s%s" % (prefix, self.head, tail)


def _rfc3339_us(t):
    sec = int(t)
    us = int(round((t - sec) * 1e6))
    if us >= 1000000:
        sec, us = sec + 1, us - 1000000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%06dZ" % us


def generate(n, seed=None, start_time=None):
    """n notifications as (event_id, event_type, body bytes), in replay order."""
    tpl = templates()
    ids = Ids(seed)
    cycles = (n + len(CYCLE) - 1) // len(CYCLE)
    keyed = []
    for c in range(cycles):
        ctm = ids.new("ctm")
        ents = [ids.new(kind) for kind, _ in LIFECYCLES]
        for j, (l, k, kind, etype) in enumerate(CYCLE):
            # position: later steps of an entity come SPREAD cycles later
            keyed.append(((c + k * SPREAD) * len(CYCLE) + j, etype, ents[l], ctm, ents[0]))
    keyed.sort(key=lambda x: x[0])
    keyed = keyed[:n]
    t0 = start_time if start_time is not None else time.time() - 86400.0
    out = []
    for pos, (_, etype, ent, ctm, sub) in enumerate(keyed):
        evt = ids.new("evt")
        body = (tpl[etype].replace("@EVT@", evt).replace("@NTF@", ids.new("ntf"))
                .replace("@AT@", _rfc3339_us(t0 + pos * 0.001)).replace("@ID@", ent)
                .replace("@CTM@", ctm).replace("@SUB@", sub))
        out.append((evt, etype, body.encode()))
    return out


def write_replay(path, events, secret, ts=None):
    """Pre-sign every body with one ts (the endpoints get a large tolerance)
    and write the replay file. Returns summary facts about the bodies."""
    ts = int(time.time()) if ts is None else ts
    sizes = []
    types = {}
    with open(path, "wb") as f:
        for _, etype, body in events:
            f.write(py_sign(body, secret, ts).encode() + b"\t" + body + b"\n")
            sizes.append(len(body))
            types[etype] = types.get(etype, 0) + 1
    sizes.sort()
    return {"events": len(sizes), "ts": ts,
            "bytes_mean": sum(sizes) / max(1, len(sizes)),
            "bytes_min": sizes[0] if sizes else 0, "bytes_max": sizes[-1] if sizes else 0,
            "bytes_p50": sizes[len(sizes) // 2] if sizes else 0, "types": types}


# ---------------------------------------------------------------------------
# pgbench: the same 13-step cycle, ids built from :client_id and a per-client
# counter, the payload text concatenated per execution and cast to jsonb.
# ---------------------------------------------------------------------------

def _sql_literal_parts(text, subst):
    """text (JSON) -> SQL expression: quoted literal pieces || variables."""
    # pgbench takes ':name' anywhere in a command for a variable, even inside
    # a string literal: keep structural colons followed by a space (the
    # separators below) and escape the rest (inside JSON strings) as \\u003a.
    text = re.sub(r":(?=[A-Za-z_])", r"\\u003a", text)
    text = text.replace("'", "''")
    for ph, expr in subst.items():
        text = text.replace(ph, "' || %s || '" % expr)
    return "'" + text + "'"


def pgbench_script(store_only=False):
    """A pgbench script (run with -M prepared -D i=-1 -D run=R -D ep=ENDPOINT):
    each transaction is one `SELECT paddle.ingest_event(...)` of the cycle.
    store_only: event types prefixed "x" (xsubscription.created, ...), which
    ingest_event stores but does not project (for the profile only)."""
    tpl = templates(separators=(",", ": "))
    lines = [
        "-- Generated by bench/events.py: one Paddle notification per transaction,",
        "-- the replay's 13-step lifecycle cycle; ids from :run, :client_id, :i.",
        "\\set i :i + 1",
        "\\set e :i / %d" % len(CYCLE),
        "\\set k :i %% %d" % len(CYCLE),
    ]
    base = "'%s' || :run || 'c' || :client_id || 'n' || :e || '%s'"
    for j, (l, k, kind, etype) in enumerate(CYCLE):
        evt = "'evt_pgb' || :run || 'c' || :client_id || 'i' || :i"
        ntf = "'ntf_pgb' || :run || 'c' || :client_id || 'i' || :i"
        sql_type = ("x" + etype) if store_only else etype
        ent = base % (kind + "_pgb", "l%d" % l)
        sub = base % ("sub_pgb", "l0")
        ctm = base % ("ctm_pgb", "")
        payload = _sql_literal_parts(tpl[etype], {
            "@EVT@": evt, "@NTF@": ntf,
            "@AT@": "'2024-01-01T00:00:00.000000Z'",
            "@ID@": ent, "@CTM@": ctm, "@SUB@": sub,
        })
        lines.append("%s :k = %d" % ("\\if" if j == 0 else "\\elif", j))
        lines.append("SELECT paddle.ingest_event(%s, '%s', clock_timestamp(), %s, :ep, 'sandbox', (%s)::jsonb);"
                     % (evt, sql_type, ntf, payload))
    lines.append("\\endif")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["replay", "pgbench", "sizes"])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--secret", default="pdl_ntfset_bench")
    ap.add_argument("--out", default="-")
    a = ap.parse_args()
    if a.what == "pgbench":
        s = pgbench_script()
        (sys.stdout.write(s) if a.out == "-" else open(a.out, "w").write(s))
    elif a.what == "replay":
        print(json.dumps(write_replay(a.out, generate(a.events), a.secret)))
    else:
        for t, s in sorted(templates().items()):
            print("%6d  %s" % (len(s), t))
