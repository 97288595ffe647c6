"""Chaos, short version (the full one is `make chaos`, tests/chaos.py).

About 1,500 signed events for many subscriptions, transactions, customers and
adjustments, several snapshots each in random order, 10% delivered twice
(some concurrently), through nginx on 16 connections with Paddle-style
retries, while every fault kind of tests/faults.py is injected at least once:
a worker SIGKILLed, PostgreSQL SIGKILLed and shut down immediately (crash
recovery both times), nginx restarted, the database frozen (SIGSTOP), its
event table locked, its connections terminated.  Proves: every acknowledged
event is stored, every event exactly once and claimed exactly once from a
consumer queue (claims run through the faults), each state row is its
entity's newest snapshot, no orphan item rows, and serve is healthy with all
its workers again by itself.
"""

import sys
import unittest

import chaos


class ChaosShort(unittest.TestCase):

    def test_acked_events_are_stored_exactly_once_under_faults(self):
        opts = chaos.short_options(quiet=True)
        res = chaos.run(opts)
        self.assertTrue(res.ok, res.report)
        f = res.figures
        sys.stderr.write("\n  chaos (seed %s): %s; claimed %s; faults %s; non-2xx %s; %s\n  " % (
            f.get("seed"), f.get("events stored"), f.get("stored events claimed by a consumer"), f.get("faults"),
            f.get("non-2xx"), f.get("throughput")))


if __name__ == "__main__":
    unittest.main()
