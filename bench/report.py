"""The Markdown the benchmarks print and write into docs/performance.md, and
the raw results saved as JSON."""

import json
import os
import re

from measure import BUILD_BENCH, DOC  # sets sys.path for tests/harness.py
from stack import NGINX_ACCESS_LOG_OPTIONS, NGINX_SERVER_DIRECTIVES


def fmt_kb(kb):
    return "%.1f" % (kb / 1024.0)


def server_cpu(r, leave_out=()):
    """CPU seconds of everything serving the events: workers (or node),
    nginx or the node primary, PostgreSQL; not the load generator, nor the
    groups named in leave_out."""
    c = r["cpu"]
    return sum(v for k, v in c.items() if not k.startswith("_") and not k.endswith(("_user", "_sys"))
               and k not in ("wrk", "pgbench") + tuple(leave_out))


def render_table(results):
    head = ("| system | conc. | events | events/s | p50 ms | p99 ms | worker RSS sum / max MiB "
            "| worker CPU s/1k ev (user+sys) | server CPU s/1k ev | WAL KB/ev | rows = 2xx | other load |")
    lines = [head, "|" + "---|" * 12]
    for r in results:
        n = max(1, r["events"])
        if r["system"] == "pgbench":
            rss = wcpu = "—"
            check = "%s (%d = %d)" % ("yes" if r["verified"] else "**NO**", r["rows"], r["events"])
        else:
            c = r["cpu"]
            rss = "%s / %s (%d proc)" % (fmt_kb(r["rss_sum_kb"]), fmt_kb(r["rss_max_kb"]), r["nproc"])
            wcpu = "%.3f (%.3f+%.3f)" % (1000.0 * c["workers"] / n, 1000.0 * c["workers_user"] / n,
                                         1000.0 * c["workers_sys"] / n)
            check = "%s (%d = %d)" % ("yes" if r["verified"] else "**NO**", r["rows"], r["n2xx"])
        lines.append("| %s | %d | %d | %.0f | %.2f | %.2f | %s | %s | %.3f | %.1f | %s | %.0f%% |" % (
            r.get("title", r["system"]), r["concurrency"], r["events"], r["eps"], r["lat_ms"]["p50"],
            r["lat_ms"]["p99"], rss, wcpu, 1000.0 * server_cpu(r) / n,
            r["wal_bytes_per_event"] / 1024.0, check, 100.0 * r["cpu"]["_foreign_share"]))
    return "\n".join(lines)


def find(results, system, conc, variant=None):
    for r in results:
        if r["system"] == system and r["concurrency"] == conc and r.get("variant") == variant:
            return r
    return None


def targets(results, drv, wprof, workers, rounds=None):
    out = []
    pg, nd = find(results, "pgbench", 16), find(results, "node", 16)
    variants = [None] + sorted({r["variant"] for r in results if r.get("variant")})
    for v in variants:
        ph = find(results, "paddlehook", 16, v)
        if v is None and rounds and len(rounds) > 1:
            out += _round_targets(rounds, "workers=%d" % workers)
        elif ph:
            out += _ratio_targets(ph, pg, nd, v or "workers=%d" % workers)
    phs = [r for r in results if r["system"] == "paddlehook"]
    if phs:
        mx = max(r["rss_max_kb"] for r in phs)
        out.append(("worker RSS ≤ 8 MiB per process under load", "%.1f MiB max (all paddlehook runs)"
                    % (mx / 1024.0), mx <= 8 * 1024))
        out.append(("no RSS growth over 200,000 events", "see `make bench-soak`", None))
    if drv and "ir_per_event" in drv:
        us = drv["ir_per_event"] * drv["ns_per_ir"] / 1000.0
        txt = "verify+parse+bind of %d B: %.0f Ir = %.1f µs" % (drv["body_bytes"], drv["ir_per_event"], us)
        ok = us <= 40
        if wprof and "ir_loop_per_event" in wprof:
            wus = wprof["ir_loop_per_event"] * drv["ns_per_ir"] / 1000.0
            txt += "; whole worker request loop: %.0f Ir ≈ %.1f µs user space" % (
                wprof["ir_loop_per_event"], wus)
            ok = ok and wus <= 40
        out.append(("worker CPU ≤ 40 µs per 5 KB event (callgrind)", txt, ok))
    return out


def _ratio_targets(ph, pg, nd, label):
    """The targets of one run of each system (round_ratios does the arithmetic)."""
    q = round_ratios({"paddlehook": ph, "pgbench": pg, "node": nd})
    out = []
    if q["ceiling"] is not None:
        out.append(("paddlehook@16 ≥ 85% of pgbench@16 events/s", "%.0f%% (%.0f / %.0f); per server "
                    "CPU second (insensitive to other load): %.0f%% (%.2f vs %.2f ms per event)"
                    % (100 * q["ceiling"], ph["eps"], pg["eps"], 100 * q["ceiling_cpu"],
                       per_event_ms(ph), per_event_ms(pg)),
                    q["ceiling"] >= 0.85))
    if q["node"] is not None:
        out.append(("paddlehook@16 ≥ 2× Node peer@16 events/s", "%.2f× (%.0f / %.0f); per server CPU "
                    "second: %.2f× (%.2f vs %.2f ms per event; workers alone %.2f vs %.2f ms)"
                    % (q["node"], ph["eps"], nd["eps"], q["node_cpu"], per_event_ms(ph), per_event_ms(nd),
                       1000 * ph["cpu"]["workers"] / ph["events"], 1000 * nd["cpu"]["workers"] / nd["events"]),
                    q["node"] >= 2.0))
        out.append(("paddlehook@16 p99 ≤ ½ Node peer@16 p99", "%.2f× (%.1f / %.1f ms)"
                    % (q["p99"], ph["lat_ms"]["p99"], nd["lat_ms"]["p99"]), q["p99"] <= 0.5))
    return [("%s [%s]" % (a, label), b, c) for a, b, c in out]


def per_event_ms(r):
    """Server CPU per event in ms; never 0, so that the ratios below are defined for an idle-looking run."""
    return max(1e-9, 1000.0 * server_cpu(r) / max(1, r["events"]))


def round_ratios(rd):
    """The target ratios of one round of 16-connection runs (None where a system is missing)."""
    ph, pg, nd = rd.get("paddlehook"), rd.get("pgbench"), rd.get("node")
    return {
        "ceiling": ph["eps"] / pg["eps"] if ph and pg else None,
        "ceiling_cpu": per_event_ms(pg) / per_event_ms(ph) if ph and pg else None,
        "node": ph["eps"] / nd["eps"] if ph and nd else None,
        "node_cpu": per_event_ms(nd) / per_event_ms(ph) if ph and nd else None,
        "p99": ph["lat_ms"]["p99"] / max(1e-9, nd["lat_ms"]["p99"]) if ph and nd else None,
    }


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def _round_targets(rounds, label):
    rs = [round_ratios(rd) for rd in rounds]

    def series(key):
        """(median, values) of one ratio over the rounds that have it."""
        vals = [r[key] for r in rs if r[key] is not None]
        return (median(vals) if vals else None), vals

    def listed(vals, fmt):
        return ", ".join(fmt(v) for v in vals)

    out = []
    c, cs = series("ceiling")
    if c is not None:
        cc, _ = series("ceiling_cpu")
        out.append(("paddlehook@16 ≥ 85% of pgbench@16 events/s",
                    "median of %d rounds %.0f%% (rounds: %s); per server CPU second, median: %.0f%%"
                    % (len(cs), 100 * c, listed(cs, lambda v: "%.0f%%" % (100 * v)), 100 * cc), c >= 0.85))
    n, ns = series("node")
    if n is not None:
        nc, _ = series("node_cpu")
        p, ps = series("p99")
        out.append(("paddlehook@16 ≥ 2× Node peer@16 events/s",
                    "median of %d rounds %.2f× (rounds: %s); per server CPU second, median: %.2f×"
                    % (len(ns), n, listed(ns, lambda v: "%.2f×" % v), nc), n >= 2.0))
        out.append(("paddlehook@16 p99 ≤ ½ Node peer@16 p99",
                    "median of %d rounds %.2f× (rounds: %s)" % (len(ps), p, listed(ps, lambda v: "%.2f×" % v)),
                    p <= 0.5))
    return [("%s [%s]" % (a, label), b, ok) for a, b, ok in out]


def render_rounds(rounds):
    """The 16-connection runs round by round (round 1 is in the table above)."""
    if not rounds or len(rounds) < 2:
        return []
    out = ["Rounds at 16 connections (the systems one after the other in each round; round 1 is the table's; "
           "events/s, p99 ms and server CPU ms per event):", "",
           "| round | pgbench | paddlehook | Node.js peer | paddlehook / pgbench (per server CPU s) "
           "| paddlehook / Node (per server CPU s) | p99 paddlehook / Node |", "|" + "---|" * 7]

    def cell(r):
        return "%.0f, p99 %.1f, %.2f ms" % (r["eps"], r["lat_ms"]["p99"], per_event_ms(r)) if r else "—"

    def ratio(v, pct=False):
        return "—" if v is None else ("%.0f%%" % (100 * v) if pct else "%.2f×" % v)

    for k, rd in enumerate(rounds, 1):
        q = round_ratios(rd)
        out.append("| %d | %s | %s | %s | %s (%s) | %s (%s) | %s |" % (
            k, cell(rd.get("pgbench")), cell(rd.get("paddlehook")), cell(rd.get("node")),
            ratio(q["ceiling"], True), ratio(q["ceiling_cpu"], True), ratio(q["node"]), ratio(q["node_cpu"]),
            ratio(q["p99"])))
    own = [(rd["paddlehook"]["worker_ms"], rd["paddlehook"]["lat_ms"]["p99"]) for rd in rounds
           if rd.get("paddlehook", {}).get("worker_ms", {}).get("n")]
    if own:
        out += ["", "paddlehook's workers' own time per delivery (`duration_ms` in serve's log: the body, the "
                "signature, the parse, the database round trip with its commit, the answer), p50 / p99 ms by round: "
                "%s; the client's p99: %s ms. The difference is time outside the workers: waiting for a free one, "
                "and the queue left behind when the database holds every commit at once."
                % (", ".join("%.1f / %.1f" % (w["p50"], w["p99"]) for w, _ in own),
                   ", ".join("%.1f" % p99 for _, p99 in own))]
    return out + [""]


def render_duplicates(dups):
    """The replays answered as duplicates: the database finds each id stored and the front end shows."""
    ph = next((r for r in dups if r["system"] == "paddlehook"), None)
    nd = next((r for r in dups if r["system"] == "node"), None)
    if not ph and not nd:
        return []
    out = ["The same 16-connection replay sent a second time, right after round 1 stored it, so that every "
           "delivery is answered `200 duplicate`: PostgreSQL finds the event id and stores nothing, and the "
           "front end carries a larger share of the cost (Paddle's retries and replays look like this):", "",
           render_table([r for r in (ph, nd) if r]), ""]
    if ph and nd:
        def front_ms(r):
            return 1000.0 * server_cpu(r, ("postgres",)) / max(1, r["events"])
        q = round_ratios({"paddlehook": ph, "node": nd})
        out += ["All duplicates, paddlehook / Node peer: events/s %.2f× (%.0f / %.0f), per server CPU second "
                "%.2f× (%.2f vs %.2f ms per event), p99 %.2f× (%.1f / %.1f ms); the front end alone (workers and "
                "nginx; the peer's processes) %.2f vs %.2f ms per event, PostgreSQL %.2f vs %.2f ms." % (
                    q["node"], ph["eps"], nd["eps"], q["node_cpu"], per_event_ms(ph), per_event_ms(nd), q["p99"],
                    ph["lat_ms"]["p99"], nd["lat_ms"]["p99"], front_ms(ph), front_ms(nd),
                    1000.0 * ph["cpu"]["postgres"] / max(1, ph["events"]),
                    1000.0 * nd["cpu"]["postgres"] / max(1, nd["events"])), ""]
    return out


def render_targets(tg):
    out = ["Targets from the issue:", "", "| target | measured | met |", "|---|---|---|"]
    for a, b, c in tg:
        out.append("| %s | %s | %s |" % (a, b, "—" if c is None else ("yes" if c else "**no**")))
    return out + [""]


def render_report(kind, facts, body_facts, results, extra_md):
    f = facts
    ps = f["pg_settings"]
    lines = [
        "`make %s`, %s. Machine: %s, %d cores, %s RAM, %s, kernel %s; fdatasync of one 8 kB "
        "write %s µs (pg_test_fsync); load average at start %s. PostgreSQL %s: fsync=%s, "
        "synchronous_commit=%s, full_page_writes=%s, wal_sync_method=%s, shared_buffers=%s, "
        "max_wal_size=%s. nginx %s; Node.js %s with @paddle/paddle-node-sdk %s and pg %s; "
        "wrk %s; gcc %s; paddlehook %s." % (
            kind, f["date"], f["cpu"], f["cores"], f["memory"], f["os"], f["kernel"],
            f["fdatasync_8k_us"], " ".join(f["loadavg_start"]), ps.get("server_version", "?").split(" ")[0],
            ps.get("fsync"), ps.get("synchronous_commit"), ps.get("full_page_writes"),
            ps.get("wal_sync_method"), ps.get("shared_buffers"), ps.get("max_wal_size"),
            f["nginx"].replace("nginx/", ""), f["node"], f["paddle_sdk"], f["pg_js"], f["wrk"],
            f["gcc"], f["git"]),
        "",
    ]
    if body_facts:
        lines += ["Replay: %d unique pre-signed notifications (%d subscription, %d transaction "
                  "events; 2/3 of them update an entity an earlier event created), bodies %d–%d "
                  "bytes, mean %.0f. Every run starts from empty event and state tables after a "
                  "CHECKPOINT and sends each notification once; wrk uses min(2, connections) "
                  "threads. nginx as docs/deploy.md tunes a busy endpoint (`%s`, access log `%s`) and "
                  "keeps as many idle connections to the workers as there are workers." % (
                      body_facts["events"],
                      sum(v for k, v in body_facts["types"].items() if k.startswith("subscription")),
                      sum(v for k, v in body_facts["types"].items() if k.startswith("transaction")),
                      body_facts["bytes_min"], body_facts["bytes_max"], body_facts["bytes_mean"],
                      NGINX_SERVER_DIRECTIVES, NGINX_ACCESS_LOG_OPTIONS), ""]
    if results:
        lines += [render_table(results), ""]
    lines += extra_md
    return "\n".join(lines).rstrip() + "\n"


def update_doc(section, md):
    begin = "<!-- BEGIN %s: generated by bench/run.py, rewritten on every run -->" % section
    end = "<!-- END %s -->" % section
    block = begin + "\n\n" + md + "\n" + end
    text = open(DOC).read() if os.path.exists(DOC) else "# Performance\n"
    pat = re.compile(re.escape("<!-- BEGIN %s:" % section) + r".*?" + re.escape(end), re.S)
    if pat.search(text):
        text = pat.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(DOC, "w") as f:
        f.write(text)


def save_json(name, obj):
    os.makedirs(BUILD_BENCH, exist_ok=True)
    path = os.path.join(BUILD_BENCH, name)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=str)
    return path


def render_profile(drv, wprof):
    out = ["Per-event CPU of the worker, measured with callgrind (Ir = instructions executed) "
           "and converted to time with the driver's own native CPU time per instruction:", ""]
    nat = drv["native"]
    ir = drv["ir"]
    out.append("- Driver `build/bench/profile-event` (bench/profile_event.c linked with fcgi/sig.c "
               "and fcgi/event.c; one %d-byte transaction.paid, the same code path as webhook.c "
               "before the database): **%.0f Ir per event** = sig_parse %.0f + sig_verify %.0f "
               "(of which libsodium HMAC-SHA256 update %.0f) + event_parse %.0f (of which yajl_parse "
               "%.0f) + bind %.0f. Natively %.1f µs CPU per event, the fastest of %d runs of %d iterations "
               "(median %.1f µs; the slower runs share the core with other load) = %.3f ns per Ir."
               % (drv["body_bytes"], drv["ir_per_event"], ir["sig_parse"], ir["sig_verify"],
                  ir["crypto_auth_hmacsha256_update"], ir["event_parse"], ir["yajl_parse"],
                  ir["bind_params"], nat["ns_per_event"] / 1000.0, nat["runs"], nat["iterations"],
                  nat["ns_median"] / 1000.0, drv["ns_per_ir"]))
    if wprof and "ir" in wprof:
        w = wprof["ir"]
        out.append("- The real worker (`paddlehook serve --workers 1` under callgrind, %d requests of "
                   "the replay mix through nginx at 1 connection, inclusive Ir per request): request "
                   "loop **%.0f Ir** ≈ %.1f µs (process total with start-up: %.0f Ir): FCGX_Accept_r "
                   "%.0f, http_request_init %.0f, refresh %.0f, webhook_handle %.0f [sig_verify %.0f, "
                   "event_parse %.0f, store_ingest %.0f (PQexecPrepared %.0f), log_line %.0f, "
                   "http_read_body %.0f, http_respond_status %.0f], FCGX_Finish_r %.0f. Kernel time "
                   "(syscalls) is not in these counts; the table's worker CPU column has it."
                   % (wprof["requests"], wprof["ir_loop_per_event"],
                      wprof["ir_loop_per_event"] * drv["ns_per_ir"] / 1000.0, wprof["ir_total_per_event"],
                      w["FCGX_Accept_r"], w["http_request_init"], w["refresh"], w["webhook_handle"],
                      w["sig_verify"], w["event_parse"], w["store_ingest"], w["PQexecPrepared"],
                      w["log_line"], w["http_read_body"], w["http_respond_status"], w["FCGX_Finish_r"]))
    out.append("")
    return out


def render_sizes(s):
    out = ["Storage per event after the paddlehook run at 16 connections (%d events): the jsonb "
           "payload takes %d bytes (lz4) for %d bytes of JSON text." %
           (s["events"], s["jsonb_bytes"], s["json_text_bytes"]), "",
           "| table | heap B/event | indexes B/event | TOAST B/event | indexes |", "|---|---|---|---|---|"]
    for t in s["tables"]:
        out.append("| %s | %.0f | %.0f | %.0f | %d |" % (t["table"], t["heap_per_event"],
                                                        t["index_per_event"], t["toast_per_event"],
                                                        t["indexes"]))
    out.append("")
    return out
