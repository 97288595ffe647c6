#!/usr/bin/env python3
"""make bench / bench-soak / bench-profile: paddlehook side by side with the
database's own ceiling (pgbench) and with the usual Node.js handler.

Everything runs on loopback in one temporary directory, started and stopped
by this script (tests/harness.py): PostgreSQL 15 with fsync=on,
synchronous_commit=on and full_page_writes=on, `paddlehook serve` behind
nginx, and the Node.js peer (bench/peer-node) on its own port.

    python3 bench/run.py bench     # the table -> docs/performance.md
    python3 bench/run.py soak      # 200,000 events, worker RSS over time
    python3 bench/run.py profile   # perf + pg_stat_statements + WAL per statement

See docs/performance.md for what each column means. The commands are here; the
stack and load generators in stack.py, /proc measurements in measure.py,
callgrind/strace/latency breakdowns in profiling.py, the Markdown in report.py.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

from measure import BUILD_BENCH, DOC, log  # sets sys.path for tests/harness.py
from stack import (PIN_DB, PIN_FRONT, Stack, db_sizes, head_file, machine_facts, make_replay, restart_serve,
                   run_pgbench, run_wrk, wait_quiet)
from profiling import latency_decomposition, profile_driver, profile_worker, syscalls_per_event
from report import (render_duplicates, render_profile, render_report, render_rounds, render_sizes, render_table,
                    render_targets, save_json, targets, update_doc)


def cmd_bench(args):
    t_start = time.monotonic()
    stack = Stack(args)
    results, sizes, drv, wprof = [], None, None, None
    try:
        stack.start()
        stack.start_node()
        stack.pin()
        facts = machine_facts(stack)
        log("generating %d + %d warm-up notifications" % (args.events, args.warmup))
        replay, body_facts, evs = make_replay(stack, args.events, "replay.txt")
        warm, _, _ = make_replay(stack, args.warmup, "warmup.txt")
        replays = {}
        for conc in args.levels:
            k = min(args.events, args.level_events.get(conc, args.events))
            replays[conc] = (replay if k == args.events else
                             head_file(replay, k, os.path.join(stack.H.tmpdir, "replay-%d.txt" % k)))
        ph_url = "%s/paddle/webhooks/%s" % (stack.H.base_url, stack.ep.id)
        nd_url = "http://127.0.0.1:%d/paddle/webhooks/%s" % (stack.node_port, stack.ep.id)
        timeout = args.run_timeout
        facts["busy_before"] = wait_quiet(args.quiet_wait)

        log("warm-up: %d events each through paddlehook and the node peer, pgbench 3 s" % args.warmup)
        stack.reset_db()
        run_wrk(stack, ph_url, warm, 16, stack.worker_pids, "paddlehook", timeout)
        stack.reset_db()
        run_wrk(stack, nd_url, warm, 16, stack.node_worker_pids, "node", timeout)
        stack.reset_db()
        run_pgbench(stack, 4, 3, run_id=999)

        systems = [s for s in ("pgbench", "paddlehook", "node") if s not in args.skip]

        def run_system(system, conc, run_id):
            stack.reset_db()
            if system == "pgbench":
                r = run_pgbench(stack, conc, args.pgbench_seconds, run_id=run_id)
            elif system == "paddlehook":
                r = run_wrk(stack, ph_url, replays[conc], conc, stack.worker_pids, "paddlehook",
                            timeout, {"nginx": stack.nginx_pids})
                r["title"] = "paddlehook (%d workers)" % stack.H.workers
            else:
                r = run_wrk(stack, nd_url, replays[conc], conc, stack.node_worker_pids, "node",
                            timeout, {"node_primary": stack.node_primary_pids})
                r["title"] = "Node.js peer (%d procs)" % len(stack.node_worker_pids())
            log("%-10s c=%-2d %6.0f events/s  p50 %6.2f ms  p99 %7.2f ms  verified=%s  other load %.0f%%"
                % (system, conc, r["eps"], r["lat_ms"]["p50"], r["lat_ms"]["p99"], r["verified"],
                   100 * r["cpu"]["_foreign_share"]))
            return r

        def run_duplicates(system):
            """The 16-connection replay again, on the rows it stored: every answer is a duplicate, so the
            database does little and the front end shows."""
            if system == "paddlehook":
                r = run_wrk(stack, ph_url, replays[16], 16, stack.worker_pids, "paddlehook", timeout,
                            {"nginx": stack.nginx_pids}, answer="duplicate")
                r["title"] = "paddlehook (%d workers), all duplicates" % stack.H.workers
            else:
                r = run_wrk(stack, nd_url, replays[16], 16, stack.node_worker_pids, "node", timeout,
                            {"node_primary": stack.node_primary_pids}, answer="duplicate")
                r["title"] = "Node.js peer (%d procs), all duplicates" % len(stack.node_worker_pids())
            log("%-10s c=16 all duplicates %6.0f events/s  p99 %7.2f ms  verified=%s  other load %.0f%%"
                % (system, r["eps"], r["lat_ms"]["p99"], r["verified"], 100 * r["cpu"]["_foreign_share"]))
            return r

        rounds = []      # the 16-connection runs of each system, round by round
        duplicates = []  # the same replays answered as duplicates (round 1)
        for conc in args.levels:
            for system in systems:
                r = run_system(system, conc, conc)
                results.append(r)
                if system == "paddlehook" and conc == 16:
                    sizes = db_sizes(stack)
                if system != "pgbench" and conc == 16 and not args.no_duplicates:
                    duplicates.append(run_duplicates(system))
            if conc == 16:
                rounds.append({r["system"]: r for r in results if r["concurrency"] == 16})
        # More rounds of the 16-connection runs, the systems interleaved: the targets take the
        # median of the per-round ratios, which drifts less with the host's other load than one run.
        if 16 in args.levels:
            for k in range(2, args.rounds + 1):
                log("round %d of %d at 16 connections" % (k, args.rounds))
                rounds.append({system: run_system(system, 16, 16 + 100 * k) for system in systems})
        stack.stop_node()

        # the same 16-connection replay with other worker counts (a configuration, not code)
        if "paddlehook" in systems and 16 in args.levels:
            for w in args.also_workers:
                restart_serve(stack, w)
                stack.reset_db()
                r = run_wrk(stack, ph_url, replays[16], 16, stack.worker_pids, "paddlehook",
                            timeout, {"nginx": stack.nginx_pids})
                r["title"] = "paddlehook (%d workers)" % w
                r["variant"] = "workers=%d" % w
                results.append(r)
                log("paddlehook c=16 workers=%d %6.0f events/s  p99 %7.2f ms  other load %.0f%%"
                    % (w, r["eps"], r["lat_ms"]["p99"], 100 * r["cpu"]["_foreign_share"]))
            if args.also_workers:
                restart_serve(stack, args.workers)

        if not args.no_callgrind:
            body = next(e[2] for e in evs if e[1] == "transaction.paid")
            log("callgrind: driver (verify + parse + bind of one %d-byte event)" % len(body))
            drv = profile_driver(args, body, stack.secret)
            log("callgrind: the worker for %d requests" % args.callgrind_requests)
            wprof = profile_worker(stack, args, open(replay, "rb").readlines(),
                                   args.callgrind_requests)

        tg = targets(results, drv, wprof, args.workers, rounds)
        extra = render_rounds(rounds) + render_targets(tg) + render_duplicates(duplicates)
        if drv:
            extra += render_profile(drv, wprof)
        if sizes:
            extra += render_sizes(sizes)
        short = ", ".join("%d connection%s the first %d" % (c, "" if c == 1 else "s",
                                                            min(args.events, args.level_events[c]))
                          for c in args.levels if args.level_events.get(c, args.events) < args.events)
        kind = "bench-pinned" if args.pin else "bench"
        extra.append("Wall time of this `make %s`: %.0f s.%s `other load` = CPU used during the "
                     "run by processes that are not part of the benchmark, as a share of the machine "
                     "(other sessions on a shared machine); above a few percent the absolute numbers "
                     "are perturbed, the ratios less so."
                     % (kind, time.monotonic() - t_start,
                        (" To keep the run under 15 minutes the latency-bound levels replay a prefix "
                         "of the same notifications: %s." % short) if short else ""))
        if args.pin:
            extra.append("")
            extra.append("Pinned: PostgreSQL (the postmaster, so every backend) on CPU %s; nginx, paddlehook "
                         "serve and its workers, the Node.js peer, wrk and pgbench on CPU %s. The database "
                         "gets the same core whatever the front end costs, so events/s show whether a "
                         "front end keeps up with the database." % (
                             ",".join(map(str, sorted(PIN_DB))), ",".join(map(str, sorted(PIN_FRONT)))))
        md = render_report(kind, facts, body_facts, results, extra)
        print(md)
        raw = save_json("results-%s.json" % kind, {"facts": facts, "body": body_facts, "results": results,
                                               "driver": drv, "worker": wprof, "sizes": sizes,
                                               "targets": tg, "rounds": rounds, "duplicates": duplicates})
        log("raw results: %s" % raw)
        if not args.no_doc:
            update_doc("make " + kind, md)
            log("updated %s" % DOC)
        return 0 if all(r["verified"] for r in results + duplicates) else 1
    finally:
        stack.stop()


def cmd_soak(args):
    stack = Stack(args)
    try:
        stack.start()
        facts = machine_facts(stack)
        log("generating %d notifications" % args.events)
        replay, body_facts, _ = make_replay(stack, args.events, "soak.txt")
        ph_url = "%s/paddle/webhooks/%s" % (stack.H.base_url, stack.ep.id)
        facts["busy_before"] = wait_quiet(args.quiet_wait)
        stack.reset_db()
        access_log = os.path.join(stack.H.nginx_dir, "access.log")
        log("replaying %d events at %d connections" % (args.events, args.conns))
        r = run_wrk(stack, ph_url, replay, args.conns, stack.worker_pids, "paddlehook",
                    args.run_timeout, {"nginx": stack.nginx_pids}, progress_log=access_log,
                    rss_interval=1.0)
        r["title"] = "paddlehook (%d workers)" % stack.H.workers
        series = r.pop("rss_series") or []
        n = r["events"]
        pids = sorted(series[-1][2]) if series else []
        marks = (0.05, 0.10, 0.25, 0.50, 0.75, 1.00)
        picks = []
        for m in marks:
            pick = next((x for x in series if x[1] is not None and x[1] >= m * n * 0.999), None)
            picks.append((m, pick or (series[-1] if series else (0, 0, {}))))
        md_rows = ["| progress | events | " + " | ".join("worker %d RSS KiB" % (i + 1) for i in range(len(pids))) + " |",
                   "|" + "---|" * (2 + len(pids))]
        for m, (t, prog, rss) in picks:
            md_rows.append("| %d%% (%.0f s) | %s | %s |" % (m * 100, t, prog,
                                                          " | ".join(str(rss.get(p, "—")) for p in pids)))
        base = picks[1][1][2]
        late = [rss for t, prog, rss in series if prog is not None and prog >= 0.75 * n]
        growth = {p: (max(x.get(p, 0) for x in late) - base.get(p, 0)) if late else 0 for p in pids}
        worst = max(growth.values()) if growth else 0
        no_growth = worst <= args.growth_kb
        rates, prev = [], None
        for t, prog, rss in series:
            if prog is None:
                continue
            if prev is None:
                prev = (t, prog)
            elif t - prev[0] >= 20:
                rates.append((prog, (prog - prev[1]) / (t - prev[0])))
                prev = (t, prog)
        extra = ["Worker RSS during the run (VmRSS from /proc every second; progress counted from "
                 "nginx's access log, written in batches, so up to a second behind):", ""] + md_rows + [
            "", "Growth from the 10%% mark to the highest sample of the last quarter: %s KiB per "
            "worker → %s (threshold %d KiB). Peak %.1f MiB per process, %.1f MiB for all %d workers."
            % (", ".join(str(growth[p]) for p in pids), "**no growth**" if no_growth else "**grows**",
               args.growth_kb, r["rss_max_kb"] / 1024.0, r["rss_sum_kb"] / 1024.0, len(pids)),
            "", "Events/s in 20-second windows (as the tables grow): %s." % ", ".join(
                "%.0f (at %dk)" % (rate, prog // 1000) for prog, rate in rates), ""]
        md = render_report("bench-soak", facts, body_facts, [r], extra)
        print(md)
        save_json("results-soak.json", {"facts": facts, "result": r, "series": series, "growth": growth})
        if not args.no_doc:
            update_doc("make bench-soak", md)
            log("updated %s" % DOC)
        return 0 if (r["verified"] and no_growth and r["rss_max_kb"] <= 8 * 1024) else 1
    finally:
        stack.stop()


def cmd_profile(args):
    """Where the time goes, at 16 connections through paddlehook: worker
    count sweep, pg_stat_statements with nested statements, WAL, perf, strace."""
    stack = Stack(args, extra_pg={"shared_preload_libraries": "pg_stat_statements",
                                  "pg_stat_statements.track": "all",
                                  "track_functions": "all", "track_wal_io_timing": "on"})
    try:
        stack.start()
        facts = machine_facts(stack)
        H = stack.H
        H.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        replay, body_facts, _ = make_replay(stack, args.events, "profile.txt")
        warm, _, _ = make_replay(stack, 1000, "warm.txt")
        ph_url = "%s/paddle/webhooks/%s" % (H.base_url, stack.ep.id)
        facts["busy_before"] = wait_quiet(args.quiet_wait)
        stack.reset_db()
        run_wrk(stack, ph_url, warm, 16, stack.worker_pids, "paddlehook", args.run_timeout)
        extra = []

        # 1. worker count vs cores
        sweep = []
        for w in args.sweep:
            restart_serve(stack, w)
            stack.reset_db()
            r = run_wrk(stack, ph_url, replay, args.conns, stack.worker_pids, "paddlehook",
                        args.run_timeout, {"nginx": stack.nginx_pids})
            r["title"] = "paddlehook (%d workers)" % w
            sweep.append(r)
            log("workers=%-2d c=%d %6.0f events/s p99 %.2f ms" % (w, args.conns, r["eps"], r["lat_ms"]["p99"]))
        for c in args.pgbench_clients:
            for variant, opts, title in (
                    ("", None, "pgbench"),
                    ("", "-c synchronous_commit=off", "pgbench, synchronous_commit=off"),
                    ("-store-only", None, "pgbench, store only (no projection)")):
                stack.reset_db()
                r = run_pgbench(stack, c, args.pgbench_seconds, run_id=c, variant=variant,
                                pgoptions=opts)
                r["title"] = title
                sweep.append(r)
                log("%s c=%-2d %6.0f events/s p99 %.2f ms" % (title, c, r["eps"], r["lat_ms"]["p99"]))
        # latency decomposition at 1 connection: wrk -> nginx -> worker -> PostgreSQL
        dec = latency_decomposition(stack, ph_url, head_file(replay, 2000, os.path.join(
            H.tmpdir, "latency-replay.txt")))
        if dec:
            extra += ["Where one request's time goes at 1 connection (%d events; p50 / p99 in ms; nginx "
                      "logs with millisecond resolution): client (wrk) %s; nginx `$request_time` %s; "
                      "nginx `$upstream_response_time` (FastCGI connect + worker) %s; the worker's own "
                      "`duration_ms` (read body, verify, parse, database, respond) %s; PostgreSQL "
                      "execution of `ingest_event` (pg_stat_statements, mean ± stddev) %.2f ± %.2f."
                      % (dec["events"], dec["wrk"], dec["nginx_rt"], dec["nginx_urt"], dec["worker"],
                         dec["pg_mean"], dec["pg_stddev"]), ""]
        extra += ["Worker count (paddlehook at %d connections) and the database alone (pgbench: as "
                  "in `make bench`; with synchronous_commit=off, i.e. without waiting for the WAL "
                  "flush; and storing only, with event types that paddle.ingest_event does not "
                  "project):" % args.conns, "", render_table(sweep), ""]
        restart_serve(stack, args.workers)

        # 2. statements, WAL and CPU by process for one run at the default worker count
        stack.reset_db()
        H.psql("SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal'); "
               "SELECT pg_stat_reset();")
        perf_data = os.path.join(BUILD_BENCH, "perf.data")
        os.makedirs(BUILD_BENCH, exist_ok=True)
        perf = None
        for old in (perf_data, perf_data + ".old"):
            if os.path.exists(old):
                os.unlink(old)
        if shutil.which("perf"):
            perf_log = open(os.path.join(H.tmpdir, "perf.log"), "wb")
            perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "499", "-o", perf_data],
                                    stdout=perf_log, stderr=perf_log)
            time.sleep(0.5)
        try:
            r = run_wrk(stack, ph_url, replay, args.conns, stack.worker_pids, "paddlehook",
                        args.run_timeout, {"nginx": stack.nginx_pids})
            # Report only this stack's processes: the machine may be shared.
            our_pids = ",".join(str(p) for p in stack.pg_pids() + stack.worker_pids() + stack.nginx_pids())
        finally:
            if perf:
                perf.send_signal(signal.SIGINT)
                perf.wait(120)
        r["title"] = "paddlehook (%d workers), pg_stat_statements + perf" % H.workers
        n = r["events"]
        c = r["cpu"]
        extra += ["CPU by process group over one run at %d connections (%d events, %.1f s): "
                  "PostgreSQL %.2f s (user %.2f + sys %.2f), workers %.2f s (%.2f + %.2f), "
                  "nginx %.2f s (%.2f + %.2f), wrk %.2f s; i.e. per event PostgreSQL %.0f µs, "
                  "workers %.0f µs, nginx %.0f µs." % (
                      args.conns, n, r["seconds"], c["postgres"], c["postgres_user"], c["postgres_sys"],
                      c["workers"], c["workers_user"], c["workers_sys"], c["nginx"], c["nginx_user"],
                      c["nginx_sys"], c["wrk"], 1e6 * c["postgres"] / n, 1e6 * c["workers"] / n,
                      1e6 * c["nginx"] / n), ""]
        stmts = H.sql(
            "SELECT calls, round(total_exec_time::numeric, 0), round((total_exec_time / calls)::numeric, 3), "
            "round(wal_bytes / calls), round(wal_fpi::numeric / calls, 2), "
            "regexp_replace(left(query, 90), '\\s+', ' ', 'g') "
            "FROM pg_stat_statements WHERE calls > 0 ORDER BY total_exec_time DESC LIMIT 16")
        extra += ["pg_stat_statements with track = all (so the statements inside "
                  "paddle.ingest_event show up; nested times are included in their callers'):", "",
                  "| calls | total ms | ms/call | WAL B/call | FPI/call | statement |",
                  "|---|---|---|---|---|---|"]
        for calls, tot, per, wb, fpi, q in stmts:
            extra.append("| %s | %s | %s | %s | %s | `%s` |" % (calls, tot, per, wb, fpi,
                                                               q.replace("|", "\\|")))
        time.sleep(11)  # backends flush function statistics within 10 s of going idle
        funcs = H.sql("SELECT schemaname || '.' || funcname, calls, round(total_time::numeric, 0), "
                      "round(self_time::numeric, 0), round((self_time / calls * 1000)::numeric, 1) "
                      "FROM pg_stat_user_functions WHERE calls > 0 ORDER BY self_time DESC LIMIT 12")
        if funcs:
            extra += ["", "Functions (track_functions = all; inlined SQL functions do not appear; "
                      "self time excludes nested function calls but includes the statements they run):",
                      "", "| function | calls | calls/event | total ms | self ms | self µs/call |",
                      "|---|---|---|---|---|---|"]
            for fn, calls, tot, selft, per in funcs:
                extra.append("| %s | %s | %.1f | %s | %s | %s |" % (fn, calls, int(calls) / n, tot, selft, per))
        wal = H.sql("SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync, "
                    "round(wal_write_time::numeric, 0), round(wal_sync_time::numeric, 0) FROM pg_stat_wal")[0]
        extra += ["", "pg_stat_wal over the run: %.1f WAL records and %.2f full-page images per event, "
                  "%.1f KB per event; %s WAL syncs for %d commits (%.2f commits per fdatasync: group "
                  "commit), %s ms in fdatasync in total (%.2f ms per sync)." % (
                      int(wal[0]) / n, int(wal[1]) / n, int(wal[2]) / n / 1024.0, wal[4], n,
                      n / max(1, int(wal[4])), wal[6], float(wal[6]) / max(1, int(wal[4]))), ""]
        if perf and os.path.exists(perf_data):
            rep = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--pid", our_pids,
                                  "--percentage", "relative", "--sort", "comm,dso", "--stdio", "-g", "none",
                                  "--percent-limit", "0.5"],
                                 capture_output=True, text=True, timeout=300).stdout
            top = [x for x in rep.splitlines() if x.strip() and not x.startswith("#")][:16]
            extra += ["`perf record -a -g` over the same run, reported for this stack's PostgreSQL, "
                      "worker and nginx processes only (shares of their samples), by process and object:", "",
                      "```"] + top + ["```", ""]
            for comm in ("postgres", "paddlehook"):
                rep = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--pid", our_pids,
                                      "--percentage", "relative", "--comm", comm, "--sort", "sym", "--stdio",
                                      "-g", "none"],
                                     capture_output=True, text=True, timeout=300).stdout
                top = [x for x in rep.splitlines() if x.strip() and not x.startswith("#")][:25]
                extra += ["Top symbols in %s (share of that process group's samples):" % comm, "", "```"] + top + ["```", ""]

        # 3. syscalls per request
        small = head_file(replay, 2000, os.path.join(H.tmpdir, "strace-replay.txt"))
        sc = syscalls_per_event(stack, ph_url, small, 2000)
        if sc:
            top = list(sc["per_event"].items())[:14]
            extra += ["Syscalls per request in the workers (strace -c, %d events at 4 connections): %s; "
                      "%.1f in total." % (sc["events"], ", ".join("%s %.2f" % kv for kv in top),
                                          sum(sc["per_event"].values())), ""]
        md = render_report("bench-profile", facts, body_facts, [r], extra)
        print(md)
        save_json("results-profile.json", {"facts": facts, "result": r, "sweep": sweep,
                                           "statements": stmts, "wal": wal, "syscalls": sc})
        if not args.no_doc:
            update_doc("make bench-profile", md)
            log("updated %s" % DOC)
        return 0 if r["verified"] and all(x["verified"] for x in sweep) else 1
    finally:
        stack.stop()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["bench", "soak", "profile"])
    ap.add_argument("--events", type=int, default=None,
                    help="notifications per run (bench 40000, soak 200000, profile 20000)")
    ap.add_argument("--level-events", default="1:10000,4:20000",
                    help="bench: CONNS:N,... replay only the first N notifications at these levels "
                         "(latency-bound, slow); the others replay all --events")
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--levels", default="1,4,16,32", help="bench: connections / pgbench clients")
    ap.add_argument("--workers", type=int, default=4, help="paddlehook serve --workers (4 = default)")
    ap.add_argument("--also-workers", default="16",
                    help="bench: also run paddlehook at 16 connections with these worker counts")
    ap.add_argument("--sweep", default="2,4,8,16,32", help="profile: worker counts to try")
    ap.add_argument("--pgbench-clients", default="16,32", help="profile: pgbench clients to try")
    ap.add_argument("--conns", type=int, default=16, help="soak/profile: connections")
    ap.add_argument("--pgbench-seconds", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3,
                    help="bench: rounds of the 16-connection runs (systems interleaved); targets use the median")
    ap.add_argument("--skip", default="", help="bench: comma list of pgbench,paddlehook,node")
    ap.add_argument("--driver", default=os.path.join(BUILD_BENCH, "profile-event"))
    ap.add_argument("--driver-iterations", type=int, default=5000, help="per native run of the driver")
    ap.add_argument("--driver-runs", type=int, default=7, help="native runs of the driver; the fastest counts")
    ap.add_argument("--callgrind-requests", type=int, default=1000)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--growth-kb", type=int, default=128, help="soak: allowed RSS growth per worker")
    ap.add_argument("--quiet-wait", type=int, default=120,
                    help="seconds to wait at most for other load on the machine to calm down")
    ap.add_argument("--run-timeout", type=int, default=900, help="seconds per wrk run at most")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    ap.add_argument("--no-duplicates", action="store_true",
                    help="bench: skip replaying the 16-connection notifications a second time (all duplicates)")
    ap.add_argument("--pin", action="store_true",
                    help="bench: PostgreSQL on CPU 0, everything else on CPU 1 (make bench-pinned)")
    args = ap.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",") if x]
    args.level_events = {int(a): int(b) for a, b in
                         (x.split(":") for x in args.level_events.split(",") if x)}
    args.sweep = [int(x) for x in args.sweep.split(",") if x]
    args.also_workers = [int(x) for x in args.also_workers.split(",") if x]
    args.pgbench_clients = [int(x) for x in args.pgbench_clients.split(",") if x]
    args.skip = set(x for x in args.skip.split(",") if x)
    if args.events is None:
        args.events = {"bench": 40000, "soak": 200000, "profile": 20000}[args.command]
    if args.pin and (os.cpu_count() or 1) < 2:
        sys.exit("bench --pin needs at least 2 CPUs")
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found (make bench installs it with apt-get when root)")
    return {"bench": cmd_bench, "soak": cmd_soak, "profile": cmd_profile}[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
