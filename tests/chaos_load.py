"""The chaos test's load: deliveries (originals and duplicates), the scheduler
that plays Paddle's retries with backoff, the sending threads and their
figures, and the thread that injects one fault at a time (tests/chaos.py)."""

import bisect
import collections
import heapq
import http.client
import json
import random
import threading
import time

from harness import py_sign


class Delivery:
    __slots__ = ("event", "body", "kind", "barrier", "attempts", "first_start", "spans", "done")

    def __init__(self, event, kind, body=None, barrier=None):
        self.event = event
        self.kind = kind              # original, dup_concurrent, dup_late, replay
        self.body = body or event.body
        self.barrier = barrier
        self.attempts = 0
        self.first_start = None
        self.spans = []               # (start, end) of the first attempt, for overlap figures
        self.done = None              # "acked" or "gave_up"


def build_deliveries(events, rng, dup_rate):
    jobs = []
    for ev in events:
        jobs.append((ev.pos, Delivery(ev, "original")))
        if rng.random() >= dup_rate:
            continue
        r = rng.random()
        if r < 0.4:
            # Sent at the same moment as the original: both wait on a barrier.
            b = threading.Barrier(2)
            jobs[-1][1].barrier = b
            jobs.append((ev.pos, Delivery(ev, "dup_concurrent", barrier=b)))
        elif r < 0.8:
            jobs.append((ev.pos + rng.uniform(0.001, 0.3), Delivery(ev, "dup_late")))
        else:
            jobs.append((ev.pos + rng.uniform(0.001, 0.3), Delivery(ev, "replay", body=ev.replay_body())))
    jobs.sort(key=lambda j: j[0])       # stable: a concurrent pair stays adjacent
    return [d for _, d in jobs]


class Scheduler:
    """Fresh deliveries in plan order; failed ones come back after their
    backoff and take precedence once due.  take() returns None when nothing
    is left or the scheduler was closed."""

    def __init__(self, deliveries, rate=None):
        self.fresh = collections.deque(deliveries)
        self.total = len(deliveries)
        self.retry = []
        self.seq = 0
        self.inflight = 0
        self.closed = False
        self.rate = rate
        self.started = None
        self.dispatched = 0
        self.cond = threading.Condition()

    def take(self):
        with self.cond:
            while True:
                if self.closed:
                    return None
                now = time.monotonic()
                if self.started is None:
                    self.started = now
                if self.retry and self.retry[0][0] <= now:
                    self.inflight += 1
                    return heapq.heappop(self.retry)[2]
                wait = 0.5
                if self.fresh:
                    due = self.started + self.dispatched / self.rate if self.rate else now
                    if due <= now:
                        self.dispatched += 1
                        self.inflight += 1
                        return self.fresh.popleft()
                    wait = due - now
                elif not self.retry and self.inflight == 0:
                    return None
                if self.retry:
                    wait = min(wait, self.retry[0][0] - now)
                self.cond.wait(max(wait, 0.001))

    def again(self, d, due):
        with self.cond:
            self.seq += 1
            self.inflight -= 1
            heapq.heappush(self.retry, (due, self.seq, d))
            self.cond.notify()

    def finish(self, d):
        with self.cond:
            self.inflight -= 1
            self.cond.notify_all()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def fresh_left(self):
        with self.cond:
            return len(self.fresh)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.ok = collections.Counter()         # stored / duplicate
        self.non2xx = collections.Counter()     # "503 database_unavailable", "conn ConnectionRefusedError"
        self.ok_spans = []                      # (start, end) of every 2xx, in order of end
        self.ok_ends = []
        self.fail_spans = []                    # (start, end, key)
        self.gave_up = []
        self.acked_at = []                      # end time of each event's first 2xx

    def first_ok_after(self, t):
        """End time of the first 2xx of a request sent at or after t."""
        with self.lock:
            for i in range(bisect.bisect_left(self.ok_ends, t), len(self.ok_spans)):
                if self.ok_spans[i][0] >= t:
                    return self.ok_spans[i][1]
            return None


class Load:
    """The Paddle side: threads with persistent http.client connections."""

    def __init__(self, h, endpoint, deliveries, opts):
        self.h = h
        self.ep = endpoint
        self.opts = opts
        self.sched = Scheduler(deliveries, rate=opts.rate)
        self.stats = Stats()
        self.rng = random.Random(opts.seed ^ 0x5eed)
        self.threads = []
        self.t_start = self.t_end = None

    def start(self):
        self.t_start = time.monotonic()
        for i in range(self.opts.threads):
            t = threading.Thread(target=self._run, name="paddle-%d" % i, daemon=True)
            t.start()
            self.threads.append(t)

    def join(self, deadline):
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            self.sched.close()
            for t in self.threads:
                t.join(self.opts.http_timeout + 5)
        self.t_end = time.monotonic()
        return not alive

    def finished(self):
        return all(not t.is_alive() for t in self.threads)

    def _backoff(self, attempt):
        lo, hi = self.opts.backoff
        return min(hi, lo * 2 ** (attempt - 1)) * self.rng.uniform(0.8, 1.2)

    def _post(self, conn, body):
        sig = py_sign(body, self.ep.secret)
        conn.request("POST", self.ep.path, body=body,
                     headers={"Content-Type": "application/json", "Paddle-Signature": sig})
        resp = conn.getresponse()
        data = resp.read()
        try:
            j = json.loads(data.decode("utf-8"))
        except ValueError:
            j = None
        word = (j.get("status") or j.get("error")) if isinstance(j, dict) else "non-json"
        return resp.status, word, resp.will_close

    def _run(self):
        conn = None
        st, sched = self.stats, self.sched
        while True:
            d = sched.take()
            if d is None:
                break
            if d.barrier is not None and d.attempts == 0:
                try:
                    d.barrier.wait(2.0)
                except threading.BrokenBarrierError:
                    pass
            t0 = time.monotonic()
            if d.first_start is None:
                d.first_start = t0
            d.attempts += 1
            status = word = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.h.http_port,
                                                      timeout=self.opts.http_timeout)
                status, word, close = self._post(conn, d.body)
                if close:
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001 - a failed delivery; Paddle retries
                word = type(exc).__name__
                if conn is not None:
                    conn.close()
                conn = None
            t1 = time.monotonic()
            ok = status is not None and 200 <= status < 300
            if d.attempts == 1:
                d.spans.append((t0, t1))
            with st.lock:
                st.requests += 1
                d.event.deliveries += 1
                if d.attempts > 1:
                    st.retries += 1
                if ok:
                    st.ok[word] += 1
                    st.ok_spans.append((t0, t1))
                    st.ok_ends.append(t1)
                    if word == "stored":
                        d.event.stored_answers += 1
                    if not d.event.acked:
                        d.event.acked = True
                        st.acked_at.append(t1)
                else:
                    key = "%s %s" % (status, word) if status else "conn %s" % word
                    st.non2xx[key] += 1
                    st.fail_spans.append((t0, t1, key))
            if ok:
                d.done = "acked"
                sched.finish(d)
            elif d.attempts >= self.opts.max_attempts or t1 - d.first_start >= self.opts.max_age:
                d.done = "gave_up"
                with st.lock:
                    st.gave_up.append((d.event.event_id, d.kind, d.attempts))
                sched.finish(d)
            else:
                sched.again(d, t1 + self._backoff(d.attempts))
        if conn is not None:
            conn.close()


class Injector(threading.Thread):
    def __init__(self, faults, load, opts, total_events, deadline):
        super().__init__(name="faults", daemon=True)
        self.faults = faults
        self.load = load
        self.opts = opts
        self.total_events = total_events
        self.deadline = deadline
        self.records = []
        self.recovery = {}         # index -> seconds from fault end to the first 2xx sent after it
        self.unrecovered = []      # indexes of faults after which no 2xx came for 30 s
        self.stop = threading.Event()
        self.rng = random.Random(opts.seed ^ 0xfa17)

    def _kinds(self):
        while True:
            cycle = list(self.opts.kinds)
            self.rng.shuffle(cycle)
            yield from cycle

    def _may_go_on(self):
        tail = self.opts.tail * self.load.sched.total
        return (not self.stop.is_set() and time.monotonic() < self.deadline
                and len(self.records) < self.opts.max_faults
                and self.load.sched.fresh_left() > tail and not self.load.finished())

    def run(self):
        if not self.opts.kinds:
            return
        warm = max(1, int(self.opts.warmup * self.total_events))
        while not self.stop.is_set() and len(self.load.stats.acked_at) < warm:
            if self.load.finished() or time.monotonic() > self.deadline:
                return
            time.sleep(0.05)
        kinds = self._kinds()
        while self._may_go_on():
            rec = self.faults.inject(next(kinds))
            self.records.append(rec)
            # One fault at a time: wait for the first 2xx sent after this one ended.
            limit = time.monotonic() + 30
            while not self.stop.is_set():
                t = self.load.stats.first_ok_after(rec.ended)
                if t is not None:
                    self.recovery[len(self.records) - 1] = t - rec.ended
                    break
                if self.load.finished():
                    break
                if time.monotonic() >= limit:
                    self.unrecovered.append(len(self.records) - 1)
                    break
                time.sleep(0.02)
            self.stop.wait(self.rng.uniform(*self.opts.fault_gap))


class Claimer(threading.Thread):
    """The application's side during the faults: takes events from a
    consumer queue in batches, recording each batch in a table in the same
    transaction, as an application that acts exactly once would. A batch
    whose transaction dies with the database counts as neither taken nor
    recorded; the checks then expect every stored event recorded once."""

    TABLE = "public.chaos_claimed"
    BATCH = 200

    def __init__(self, h, consumer, interval=0.05):
        super().__init__(name="claimer", daemon=True)
        self.h, self.consumer, self.interval = h, consumer, interval
        self.stop = threading.Event()
        self.batches = 0
        self.errors = 0

    def create_table(self):
        self.h.sql("CREATE TABLE %s (event_id text NOT NULL, claimed_at timestamptz NOT NULL DEFAULT now())"
                   % self.TABLE)

    def claim_once(self):
        """Rows taken by one committed batch (0 when the queue was empty)."""
        rows = self.h.sql("BEGIN; WITH taken AS (INSERT INTO %s (event_id) SELECT event_id "
                          "FROM paddle.claim_events(%s, %d) RETURNING 1) SELECT count(*) FROM taken; COMMIT;"
                          % (self.TABLE, self.h.lit(self.consumer), self.BATCH))
        self.batches += 1
        return int(rows[-1][0]) if rows else 0

    def run(self):
        while not self.stop.wait(self.interval):
            try:
                self.claim_once()
            except Exception:  # noqa: BLE001 - the database is down, frozen or restarting: try again
                self.errors += 1

    def drain(self, max_batches=1000):
        """After the faults: take what is left."""
        for _ in range(max_batches):
            if self.claim_once() == 0:
                return
        raise AssertionError("the consumer queue did not drain in %d batches" % max_batches)
