#!/usr/bin/env python3
"""Chaos test: every acknowledged event is stored, exactly once, under faults.

    python3 tests/chaos.py [--events 20000] [--threads 16] [--workers 4] [--seed S]
                           [--max-seconds 540] [--kinds K,K] [--json FILE] [--keep]
    python3 tests/chaos.py --short          # what tests/test_chaos.py runs
    python3 tests/chaos.py --async-commit   # shows what a crash loses with synchronous_commit=off

A load generator plays Paddle against a real stack (tests/harness.py:
PostgreSQL + `paddlehook serve` + nginx on loopback): N unique signed events
for many customers, subscriptions, transactions and adjustments, several
snapshots per entity with distinct occurred_at (for 4% of the entities the
two newest share it, so event_id decides), delivered in random order over
16+ persistent connections; every delivery that does not get a 2xx is sent
again with backoff (50 ms doubling to 1 s, bounded attempts and age).  About
10% of the events are delivered a second time: at the same moment as the
original (both wait on a barrier), later, or later as a replay with a new
notification_id.

Meanwhile tests/faults.py SIGKILLs workers, crashes PostgreSQL (SIGKILL of the
postmaster; immediate shutdown), restarts nginx, blocks the database (SIGSTOP
of all its processes; an ACCESS EXCLUSIVE lock on payment_events) and
terminates its connections, one fault at a time, waiting for the first 2xx
after each.

Then it checks: every event is in payment_events exactly once, and was claimed
exactly once from the queue of a consumer registered before the load (a claimer
runs through the faults, recording each batch in the claiming transaction, and
drains the queue afterwards); every 2xx was for a stored event; no event got two "stored" answers; every state row holds
the projection of its entity's newest snapshot by (occurred_at, event_id); no
item row is orphaned or from another snapshot than the one its parent names; no projection
errors; no signed event got a 4xx; the serve supervisor survived and has all
its workers, healthz 200; no worker died other than those killed.  It prints
the figures and exits 1 when anything failed (the logs are kept then).  A
seed reproduces the plan and the fault order, not the timing.
`make chaos` runs this (tests/chaos.mk); tests/test_chaos.py runs the short
version inside `make check`. The plan is built in chaos_plan.py, delivered
(with faults injected) by chaos_load.py and checked by chaos_check.py; this
file holds the options, one run, and the report.
"""

import argparse
import collections
import json
import os
import random
import re
import signal
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from faults import FAULT_KINDS, ChaosHarness, Faults  # noqa: E402
from chaos_plan import build_plan  # noqa: E402
from chaos_load import Claimer, Injector, Load, build_deliveries  # noqa: E402
from chaos_check import Checker, log_counts  # noqa: E402

CONSUMER = "chaos"   # a consumer queue (paddle.consumers) from which every stored event must be claimed once


class Options:
    """Knobs of one chaos run (the command line maps onto these)."""

    def __init__(self, **kw):
        self.events = 20000
        self.threads = 16
        self.workers = 4
        self.seed = None
        self.dup_rate = 0.10          # share of events delivered again
        self.tie_rate = 0.04          # entities whose two newest snapshots share occurred_at
        self.kinds = FAULT_KINDS
        self.max_faults = 60
        self.min_faults = 0           # fail if fewer were injected (the short test wants all kinds)
        self.fault_gap = (0.5, 2.0)   # seconds between a fault's recovery and the next fault
        self.block_seconds = (2.0, 4.0)
        self.warmup = 0.02            # share of events acknowledged before the first fault
        self.tail = 0.04              # no fault once fewer fresh deliveries than this share remain
        self.rate = None              # cap on first deliveries per second (None: as fast as it goes)
        self.max_seconds = 540        # whole run, including start-up and checks
        self.reserve = None           # seconds kept for draining retries, and again for the checks
        self.max_attempts = 80        # per delivery
        self.max_age = 120.0          # seconds per delivery
        self.backoff = (0.05, 1.0)
        self.http_timeout = 40.0      # > nginx's fastcgi_read_timeout (30 s)
        self.async_commit = False
        self.keep = False
        self.quiet = False
        self.before_check = None      # callable(harness), run before the checks (to test the checker)
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError("unknown option %s" % k)
            setattr(self, k, v)
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(1 << 32)
        if self.reserve is None:
            self.reserve = min(60.0, 0.15 * self.max_seconds)


def short_options(**kw):
    """The short version that tests/test_chaos.py runs inside `make check`
    (under a minute): ~1,500 events, every fault kind at least once.  The
    first deliveries are spread over the fault schedule (~20 s) so that each
    fault hits deliveries in flight; retries and bursts are not capped."""
    base = dict(events=1500, threads=16, workers=3, rate=75, tail=0.1, warmup=0.03,
                min_faults=len(FAULT_KINDS), max_faults=2 * len(FAULT_KINDS),
                block_seconds=(1.0, 2.0), fault_gap=(0.2, 0.6), max_seconds=55, max_age=30.0)
    base.update(kw)
    return Options(**base)


class Result:
    def __init__(self):
        self.failures = []
        self.warnings = []
        self.figures = collections.OrderedDict()
        self.faults = []
        self.report = ""

    @property
    def ok(self):
        return not self.failures


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0


def _by_entity(events):
    g = collections.defaultdict(list)
    for e in events:
        if e.kind != "other":
            g[(e.kind, e.entity_id)].append(e)
    return g


def _inverted(ents, first_sent):
    """True if the entity's snapshots were first sent in another order than occurred_at."""
    seq = [first_sent[e.event_id] for e in sorted(ents, key=lambda e: (e.occurred_at, e.event_id))]
    return seq != sorted(seq)


def _overlap(a, b):
    """True if the first attempts of two deliveries were in flight at the same time."""
    return bool(a.spans and b.spans and a.spans[0][0] < b.spans[0][1] and b.spans[0][0] < a.spans[0][1])


class Run:
    """One chaos run: plan + stack, storm (load and faults), health, checks,
    figures.  run() below is the entry point."""

    def __init__(self, opts, out):
        self.opts = opts
        self.out = out
        self.res = Result()
        self.t_begin = time.monotonic()
        self.deadline = self.t_begin + opts.max_seconds
        self.load_deadline = self.deadline - opts.reserve     # then the checks
        self.H = ChaosHarness(workers=opts.workers, async_commit=opts.async_commit, keep_tmp=opts.keep)
        self.faults = None

    def say(self, msg):
        if not self.opts.quiet:
            self.out.write(msg + "\n")
            self.out.flush()

    def prepare(self):
        """Builds the plan while the stack starts (the stack from this thread,
        so that its processes die with us)."""
        opts, plan = self.opts, {}

        def make_plan():
            try:
                rng = random.Random(opts.seed)
                plan["events"], plan["entities"] = build_plan(opts.events, rng, opts.tie_rate)
                plan["deliveries"] = build_deliveries(plan["events"], rng, opts.dup_rate)
                plan["seconds"] = time.monotonic() - self.t_begin
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                plan["error"] = exc

        self.say("chaos: seed %d, %d events, %d threads, %d workers, faults %s"
                 % (opts.seed, opts.events, opts.threads, opts.workers, ",".join(opts.kinds)))
        planner = threading.Thread(target=make_plan, name="plan", daemon=True)
        planner.start()
        self.H.start()
        planner.join()
        if "error" in plan:
            raise plan["error"]
        self.events, self.entity_counts, self.deliveries = plan["events"], plan["entities"], plan["deliveries"]
        self.dup_kinds = collections.Counter(d.kind for d in self.deliveries if d.kind != "original")
        self.say("plan: %d events over %s; %d deliveries (%d duplicates) built in %.1fs" % (
            len(self.events), ", ".join("%d %ss" % (v, k) for k, v in sorted(self.entity_counts.items())),
            len(self.deliveries), sum(self.dup_kinds.values()), plan["seconds"]))
        self.ep = self.H.add_endpoint(name="chaos")
        self.H.sql("INSERT INTO paddle.consumers (name) VALUES (%s)" % self.H.lit(CONSUMER))
        self.claimer = Claimer(self.H, CONSUMER)
        self.claimer.create_table()
        self.serve_pid = self.H.serve_pid()
        self.faults = Faults(self.H, random.Random(opts.seed ^ 0xbad), block_seconds=opts.block_seconds)
        self.say("stack up in %.1fs (%s)" % (time.monotonic() - self.t_begin, self.H.tmpdir))

    def storm(self):
        """The load, with the injector running beside it until the tail."""
        self.load = load = Load(self.H, self.ep, self.deliveries, self.opts)
        self.inj = inj = Injector(self.faults, load, self.opts, len(self.events),
                                  self.load_deadline - self.opts.reserve)
        load.start()
        inj.start()
        self.claimer.start()
        last = time.monotonic()
        while not load.finished() and time.monotonic() < self.load_deadline:
            time.sleep(0.25)
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                self.say("  +%5.1fs acked %d/%d, requests %d, faults %d, fresh left %d" % (
                    last - load.t_start, len(load.stats.acked_at), len(self.events), load.stats.requests,
                    len(inj.records), load.sched.fresh_left()))
        inj.stop.set()
        inj.join(60)
        self.claimer.stop.set()
        self.claimer.join(60)
        if self.claimer.is_alive():
            raise AssertionError("the claimer did not stop within 60 s")
        if not load.join(self.load_deadline):
            self.res.failures.append("the load did not finish within the time limit")
        self.faults.repair()

    def health(self):
        """serve and all its workers are back without any manual restart."""
        H, t0 = self.H, time.monotonic()
        self.healthy = "ok"
        try:
            if H.serve_pid() != self.serve_pid or not harness.pid_alive(self.serve_pid):
                raise AssertionError("serve supervisor %d is gone" % self.serve_pid)
            H.wait_workers(self.opts.workers, timeout=30)
            for i in range(3 * self.opts.workers):
                r = H.get("/paddle/healthz", timeout=10)
                if r.status != 200:
                    raise AssertionError("healthz #%d answered %s" % (i, r))
        except Exception as exc:  # noqa: BLE001
            self.healthy = str(exc)
            self.res.failures.append("not healthy after the faults: %s" % exc)
        self.healthy_after = time.monotonic() - t0

    def judge(self):
        """The invariants in the database, then what the client and logs saw."""
        res, st, inj = self.res, self.load.stats, self.inj
        if self.opts.before_check:
            self.opts.before_check(self.H)
        self.ck = ck = Checker(self.H, self.events)
        ck.events_stored_once()
        claimed_during_faults = int(self.H.sql_value("SELECT count(*) FROM %s" % Claimer.TABLE))
        self.claimer.drain()
        ck.claimed_once(CONSUMER, Claimer.TABLE)
        ck.figures["claim batches during the faults"] = "%d committed, %d failed, %d events claimed" % (
            self.claimer.batches, self.claimer.errors, claimed_during_faults)
        ck.state()
        ck.orphans()
        res.failures.extend(ck.failures)
        if st.gave_up:
            res.failures.append("%d deliveries gave up without a 2xx: %s" % (len(st.gave_up), st.gave_up[:5]))
        for k, v in st.non2xx.items():
            if k.startswith(("503 ", "502 ", "conn ")):
                continue
            if k.startswith("4"):
                res.failures.append("a signed, well-formed event was refused: %s x%d" % (k, v))
            else:
                res.warnings.append("unexpected answer under faults: %s x%d" % (k, v))
        self.logs = logs = log_counts(self.H)
        killed = {int(m.group(1)) for r in inj.records if r.kind == "worker_kill"
                  for m in [re.match(r"worker (\d+)", r.detail)] if m}
        self.died = [(int(p), how, int(n)) for p, how, n in logs["worker_exits"]]
        self.strange = [d for d in self.died if d[0] not in killed]
        if self.strange:
            res.failures.append("workers died that were not killed: %s" % self.strange[:5])
        crashes = sum(1 for r in inj.records if r.kind in ("pg_crash", "pg_immediate") and not r.error)
        if logs["pg_recoveries"] < crashes:
            res.warnings.append("postgres log shows %d crash recoveries for %d crashes"
                                % (logs["pg_recoveries"], crashes))
        for r in inj.records:
            if r.error:
                res.failures.append("fault %s could not be injected: %s" % (r.kind, r.error))
        if len(inj.records) < self.opts.min_faults:
            res.failures.append("only %d faults injected (wanted %d): the load ended too soon"
                                % (len(inj.records), self.opts.min_faults))
        if inj.unrecovered:
            res.failures.append("no 2xx within 30 s after fault(s) %s" % [
                "%d %s" % (i + 1, inj.records[i].kind) for i in inj.unrecovered])

    def figures(self):
        events, deliveries, st, inj, load = self.events, self.deliveries, self.load.stats, self.inj, self.load
        f = self.res.figures
        dur = (load.t_end or time.monotonic()) - load.t_start
        f["seed"] = self.opts.seed
        f["events"] = "%d (%s)" % (len(events), ", ".join("%s %d" % kv for kv in sorted(
            collections.Counter(e.kind for e in events).items())))
        f["entities"] = ", ".join("%d %ss" % (v, k) for k, v in sorted(self.entity_counts.items()))
        first_sent = {d.event.event_id: i for i, d in enumerate(deliveries) if d.kind == "original"}
        f["entities delivered out of order"] = sum(
            1 for ents in _by_entity(events).values() if _inverted(ents, first_sent))
        f["deliveries"] = "%d planned (%d originals + %d duplicates: %s)" % (
            len(deliveries), len(events), sum(self.dup_kinds.values()),
            ", ".join("%s %d" % kv for kv in sorted(self.dup_kinds.items())))
        originals = {d.event.event_id: d for d in deliveries if d.kind == "original"}
        f["concurrent duplicates in flight together"] = "%d of %d" % (
            sum(1 for d in deliveries if d.kind == "dup_concurrent" and _overlap(d, originals[d.event.event_id])),
            self.dup_kinds["dup_concurrent"])
        f["HTTP requests"] = "%d (first attempts %d, retries %d)" % (
            st.requests, st.requests - st.retries, st.retries)
        f["2xx"] = "%d (%s)" % (sum(st.ok.values()), ", ".join("%s %d" % kv for kv in sorted(st.ok.items())))
        f["events whose \"stored\" answer was lost"] = "%d (committed, answer cut off; the retry said duplicate)" % (
            sum(1 for e in events if e.acked and e.stored_answers == 0))
        f["non-2xx"] = "%d: %s" % (sum(st.non2xx.values()), ", ".join(
            "%s x%d" % kv for kv in st.non2xx.most_common())) if st.non2xx else "0"
        attempts = [d.attempts for d in deliveries if d.attempts]
        f["attempts per delivery"] = "max %d, p99 %d, deliveries retried %d" % (
            max(attempts or [0]), pct(attempts, 0.99), sum(1 for a in attempts if a > 1))
        f["faults"] = "%d: %s" % (len(inj.records), ", ".join("%s %d" % kv for kv in sorted(
            collections.Counter(r.kind for r in inj.records).items())))
        by_kind = collections.defaultdict(list)
        for i, secs in inj.recovery.items():
            by_kind[inj.records[i].kind].append(secs)
        f["recovery (fault end -> first 2xx sent after it)"] = "; ".join(
            "%s min %.2fs median %.2fs max %.2fs" % (k, min(v), statistics.median(v), max(v))
            for k, v in sorted(by_kind.items()))
        f["load duration"] = "%.1fs" % dur
        per_second = collections.Counter(int(t - load.t_start) for t in st.acked_at)
        f["throughput"] = "%.0f events/s acknowledged (best second %d, worst second %d), %.0f requests/s" % (
            len(st.acked_at) / dur if dur else 0, max(per_second.values() or [0]),
            min(per_second.get(i, 0) for i in range(max(1, int(dur)))), st.requests / dur if dur else 0)
        f["healthy after the load"] = "%s (workers %d/%d, serve pid %s same) in %.2fs" % (
            self.healthy, len(self.H.worker_pids()), self.opts.workers, self.serve_pid, self.healthy_after)
        f.update(self.ck.figures)
        f["worker exits logged"] = "%d (all killed by the injector: %s)" % (len(self.died), not self.strange)
        f["postgres crash recoveries logged"] = self.logs["pg_recoveries"]
        f["serve log"] = ", ".join("%s %d" % kv for kv in sorted(self.logs["serve"].items()))
        f["db_error reasons"] = "; ".join("%s x%d" % kv for kv in self.logs["db_error_reasons"].most_common(6))
        f["nginx upstream errors logged"] = self.logs["nginx_upstream_errors"]
        f["run time"] = "%.1fs" % (time.monotonic() - self.t_begin)

    def report(self):
        res, inj, st = self.res, self.inj, self.load.stats
        lines = ["", "==== chaos figures ===="]
        lines += ["%-48s %s" % (k + ":", v) for k, v in res.figures.items()]
        lines.append("---- faults (t from load start; recovery = fault end -> first 2xx sent after it)")
        for i, r in enumerate(inj.records):
            errs = sum(1 for s, e, k in st.fail_spans if r.started <= s <= r.ended + inj.recovery.get(i, 0))
            lines.append("  %2d +%6.1fs %-13s %5.2fs  recovery %s  non-2xx %4d  %s%s" % (
                i + 1, r.started - self.load.t_start, r.kind, r.ended - r.started,
                "%.2fs" % inj.recovery[i] if i in inj.recovery else "none ",
                errs, r.detail, "  ERROR " + r.error if r.error else ""))
        lines += ["warning: " + w for w in res.warnings]
        lines += ["FAIL: " + fl for fl in res.failures]
        lines.append("RESULT: %s" % ("PASS" if res.ok else "FAIL (%d problems)" % len(res.failures)))
        if not res.ok:
            self.H.keep_tmp = True
            lines.append(self.H.log_report(lines=30))
        res.report = "\n".join(lines)
        res.faults = [r.as_dict() for r in inj.records]


def run(opts, out=sys.stdout):
    """One chaos run; returns a Result (failures, warnings, figures, report)."""
    r = Run(opts, out)
    try:
        r.prepare()
        r.storm()
        r.health()
        r.judge()
        r.figures()
        r.report()
        r.say(r.res.report)
    except Exception as exc:  # noqa: BLE001 - reported as a failed run
        if r.faults is None:
            raise
        r.H.keep_tmp = True
        r.res.failures.append("chaos run crashed: %r" % exc)
        r.res.report = "chaos run crashed: %r\n%s" % (exc, r.H.log_report(lines=30))
        r.say(r.res.report)
    finally:
        if r.faults is not None:
            r.faults.repair()      # never leave a frozen postgres behind
        r.H.stop()
    return r.res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true",
                    help="the settings of tests/test_chaos.py (other options still apply)")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--max-seconds", type=float, default=540)
    ap.add_argument("--max-faults", type=int, default=60)
    ap.add_argument("--min-faults", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(FAULT_KINDS), help="fault kinds, comma-separated")
    ap.add_argument("--rate", type=float, help="cap on first deliveries per second")
    ap.add_argument("--dup-rate", type=float, default=0.10)
    ap.add_argument("--async-commit", action="store_true",
                    help="keep the harness's synchronous_commit=off (shows what a crash then loses)")
    ap.add_argument("--json", metavar="FILE", help="write figures and failures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        ap.error("unknown fault kinds %s (known: %s)" % (bad, ", ".join(FAULT_KINDS)))

    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)

    given = {k: v for k, v in (("events", args.events), ("threads", args.threads),
                               ("workers", args.workers), ("max_seconds", args.max_seconds),
                               ("max_faults", args.max_faults), ("min_faults", args.min_faults),
                               ("rate", args.rate), ("dup_rate", args.dup_rate))
             if v != ap.get_default(k)}
    common = dict(seed=args.seed, kinds=kinds, async_commit=args.async_commit, keep=args.keep)
    opts = short_options(**given, **common) if args.short else Options(
        **dict({k: getattr(args, k) for k in ("events", "threads", "workers", "max_seconds", "max_faults",
                                              "min_faults", "rate", "dup_rate")}, **common))
    try:
        res = run(opts)
    except KeyboardInterrupt as exc:
        sys.stderr.write("chaos: interrupted (%s); everything started was stopped\n" % (exc or "Ctrl-C"))
        return 130
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ok": res.ok, "failures": res.failures, "warnings": res.warnings,
                       "figures": res.figures, "faults": getattr(res, "faults", [])}, f, indent=2,
                      default=str)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
