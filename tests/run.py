#!/usr/bin/env python3
"""paddlehook's test runner (`make check`).

    python3 tests/run.py [--unit BINARY ...] [-k SUBSTRING ...] [--no-integration] [-q] [-j JOBS]

1. Runs each C unit-test binary; they print TAP (`ok N - name`,
   `not ok N - name`, optional plan `1..N`) and exit non-zero on failure.
2. Discovers and runs the integration suite (tests/test_*.py, unittest); each
   module shares one harness (PostgreSQL + paddlehook serve + nginx).
3. Prints every failure with its traceback, then ONE last line exactly
   `N passed, N failed` (unit + integration), and exits 1 if anything failed.

-k keeps integration tests whose id (module.Class.method) contains the
substring (case-sensitive); several -k are OR-ed.  Skipped tests count as
neither passed nor failed (they are listed above the last line).

-j runs up to JOBS modules at once, each in a process of its own with its own
harness (most of a module's time is waiting for its stack); a module's output
is printed whole when it ends. The longest modules of the last whole run
(build/test-module-seconds.json) start first, so that no long one starts last
and runs alone; modules it does not know start before them.
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
MODULE_SECONDS = os.path.join(os.path.dirname(TESTS_DIR), "build", "test-module-seconds.json")

TAP_LINE = re.compile(r"^(not ok|ok)\b\s*(\d+)?\s*(?:-\s*)?(.*)$")
TAP_PLAN = re.compile(r"^1\.\.(\d+)")


# --------------------------------------------------------------------------
# C unit tests (TAP)
# --------------------------------------------------------------------------

def run_unit(binary, timeout, out):
    """Run one TAP binary; return (passed, failed, failure descriptions)."""
    name = os.path.basename(binary)
    try:
        p = subprocess.run([binary], capture_output=True, text=True, timeout=timeout,
                           errors="replace")
    except FileNotFoundError:
        return 0, 1, ["%s: not found" % binary]
    except PermissionError:
        return 0, 1, ["%s: not executable" % binary]
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode("utf-8", "replace")
        return 0, 1, ["%s: timed out after %ss\n%s" % (binary, timeout, text[-2000:])]

    passed = failed = 0
    plan = None
    failures = []
    lines = p.stdout.splitlines()
    for i, line in enumerate(lines):
        m = TAP_PLAN.match(line)
        if m:
            plan = int(m.group(1))
            continue
        m = TAP_LINE.match(line)
        if not m:
            continue
        ok = m.group(1) == "ok"
        desc = m.group(3)
        todo = re.search(r"#\s*TODO\b", desc, re.I)
        if ok or todo:
            passed += 1 if ok else 0
            continue
        failed += 1
        # Diagnostics follow a failing line as "# ..." lines.
        diag = []
        for nxt in lines[i + 1:]:
            if nxt.startswith("#"):
                diag.append(nxt)
            else:
                break
        failures.append("%s: %s%s" % (name, line, ("\n" + "\n".join(diag)) if diag else ""))
    ran = passed + failed
    if plan is not None and ran < plan:
        failed += plan - ran
        failures.append("%s: planned %d tests but only %d ran" % (name, plan, ran))
    if p.returncode != 0 and failed == 0:
        failed += 1
        failures.append("%s: exited with status %d but reported no failing test\n%s"
                        % (name, p.returncode, (p.stderr or "")[-2000:]))
    if p.returncode == 0 and ran == 0:
        failed += 1
        failures.append("%s: printed no TAP results" % name)
    out.write("unit %-30s %d passed, %d failed\n" % (binary, passed, failed))
    if p.stderr and failed:
        failures.append("%s stderr (tail):\n%s" % (name, "\n".join(p.stderr.splitlines()[-20:])))
    return passed, failed, failures


# --------------------------------------------------------------------------
# Integration tests (unittest)
# --------------------------------------------------------------------------

class CountingResult(unittest.TextTestResult):
    """Counts distinct tests: a test with several failing subtests is one
    failure; module/class fixture errors count one failure each."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.failed_ids = []
        self.fixture_errors = 0
        self.passed_ids = []
        self._current_failed = False
        self.durations_ = []
        self._t0 = None

    def startTest(self, test):
        self._current_failed = False
        self._t0 = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        if self._t0 is not None:
            self.durations_.append((time.monotonic() - self._t0, test.id()))

    def _mark_failed(self, test):
        if isinstance(test, unittest.suite._ErrorHolder):
            self.fixture_errors += 1
            return
        tid = getattr(test, "test_case", test).id()
        if tid not in self.failed_ids:
            self.failed_ids.append(tid)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._mark_failed(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._mark_failed(test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._mark_failed(subtest)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._mark_failed(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed_ids.append(test.id())

    def printErrors(self):
        """Failures are reported by main(), once, after the unit results."""


def filter_suite(suite, substrings):
    """A flat suite of the tests whose id contains one of the substrings
    (keeps module order so setUpModule/tearDownModule pair up)."""
    out = unittest.TestSuite()

    def walk(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                walk(t)
            elif isinstance(t, unittest.loader._FailedTest) or \
                    any(sub in t.id() for sub in substrings):
                out.addTest(t)
    walk(suite)
    return out


def discover(patterns, module=None):
    if TESTS_DIR not in sys.path:
        sys.path.insert(0, TESTS_DIR)
    loader = unittest.TestLoader()
    suite = loader.discover(start_dir=TESTS_DIR, pattern=(module + ".py") if module else "test_*.py",
                            top_level_dir=TESTS_DIR)
    return filter_suite(suite, patterns) if patterns else suite


def modules_of(suite):
    """The modules of the suite's tests, in discovery order."""
    seen = []

    def walk(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                walk(t)
            else:
                # A module that failed to import stands as unittest.loader._FailedTest.<module>: its process
                # imports it again and reports the error.
                failed_import = isinstance(t, unittest.loader._FailedTest)
                m = t._testMethodName if failed_import else t.id().split(".", 1)[0]
                if m not in seen:
                    seen.append(m)
    walk(suite)
    return seen


def run_integration(patterns, verbosity, stream, module=None):
    suite = discover(patterns, module)
    runner = unittest.TextTestRunner(stream=stream, verbosity=verbosity,
                                     resultclass=CountingResult)
    # The runner prints its own failure report and summary; we print ours
    # afterwards so the last line is ours.
    result = runner.run(suite)
    return result


class MergedResult:
    """What the module processes of a parallel run found, in the shape main() reports."""

    def __init__(self):
        self.passed_ids, self.failed_ids, self.fixture_errors = [], [], 0
        self.failures, self.errors, self.unexpectedSuccesses, self.skipped = [], [], [], []
        self.durations_ = []

    def add(self, r):
        """r: a module's result_json(); its pairs come back as lists, which main() unpacks and sorts alike."""
        self.passed_ids += r["passed"]
        self.failed_ids += r["failed"]
        self.fixture_errors += r["fixture_errors"]
        self.failures += r["failures"]
        self.errors += r["errors"]
        self.unexpectedSuccesses += r["unexpected"]
        self.skipped += r["skipped"]
        self.durations_ += r["durations"]


def id_of(test):
    return test.id() if hasattr(test, "id") else str(test)


def result_json(result):
    return {"passed": result.passed_ids, "failed": result.failed_ids, "fixture_errors": result.fixture_errors,
            "failures": [(id_of(t), tb) for t, tb in result.failures],
            "errors": [(id_of(t), tb) for t, tb in result.errors],
            "unexpected": [id_of(t) for t in result.unexpectedSuccesses],
            "skipped": [(id_of(t), why) for t, why in result.skipped],
            "durations": result.durations_}


# A module process that does not end after SIGTERM (its harness teardown hung) in this many seconds is killed.
MODULE_STOP_GRACE_S = 60


def module_seconds():
    """{module: wall seconds} of the last run of the whole suite; {} when there is none, or when anything in it is
    odd: it only orders the run."""
    try:
        with open(MODULE_SECONDS) as f:
            seconds = json.load(f)
        if isinstance(seconds, dict) and all(isinstance(m, str) and type(v) in (int, float) and
                                             math.isfinite(v) and 0 <= v < 1e6 for m, v in seconds.items()):
            return {m: float(v) for m, v in seconds.items()}
    except Exception:  # missing, cut, or made by hand
        pass
    return {}


def save_module_seconds(seconds):
    fd, tmp = None, None
    try:
        os.makedirs(os.path.dirname(MODULE_SECONDS), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(MODULE_SECONDS), prefix=".test-module-seconds-")
        with os.fdopen(fd, "w") as f:
            fd = None
            json.dump(seconds, f, indent=1, sort_keys=True)
        os.replace(tmp, MODULE_SECONDS)
        tmp = None
    except OSError as exc:
        sys.stderr.write("run.py: cannot keep the modules' times: %s\n" % exc)
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def run_modules(patterns, jobs, quiet, out):
    """Runs each module of the suite in a process of its own, up to `jobs` at once, the longest first; returns a
    MergedResult."""
    merged = MergedResult()
    known = module_seconds()
    discovered = modules_of(discover(patterns))
    waiting = sorted(discovered, key=lambda m: -known.get(m, float("inf")))
    running = {}  # Popen -> (module, log file, result path, start time)
    seconds = {}
    tmp = tempfile.mkdtemp(prefix="paddlehook-run-")

    def start(module):
        log = open(os.path.join(tmp, module + ".log"), "w+")
        res = os.path.join(tmp, module + ".json")
        cmd = [sys.executable, os.path.abspath(__file__), "--module", module, "--result-file", res]
        cmd += [a for p in patterns for a in ("-k", p)] + (["-q"] if quiet else [])
        # A session of its own: a Ctrl-C reaches the parent alone, which stops each module once (below).
        running[subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)] = \
            (module, log, res, time.monotonic())

    def print_log(log):
        log.seek(0)
        out.write(log.read())
        log.close()

    def finish(proc):
        module, log, res, started = running.pop(proc)
        took = round(time.monotonic() - started, 1)
        print_log(log)
        try:
            with open(res) as f:
                r = json.load(f)
        except (OSError, ValueError):
            r = None
        if r is not None and (r["passed"] or r["failed"] or r["skipped"] or r["fixture_errors"]):
            merged.add(r)
            seconds[module] = took  # a module that crashed says nothing of how long it takes
        else:
            merged.failed_ids.append(module)
            merged.errors.append((module, "the module's process ended with status %s and %s" % (
                proc.returncode, "left no result" if r is None else "ran no test")))
        out.flush()

    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                start(waiting.pop(0))
            done = [p for p in running if p.poll() is not None]
            for p in done:
                finish(p)
            if not done:
                time.sleep(0.1)
    finally:
        for p in running:
            p.terminate()
        for p in list(running):
            try:
                p.wait(MODULE_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            print_log(running[p][1])  # what its teardown said, and where it kept its files
        shutil.rmtree(tmp)
    # Reached only when every module ended (an interrupt leaves by its exception); a partial run's times would
    # rank the modules it left out by an older run's.
    if not patterns:
        save_module_seconds({m: seconds.get(m, known.get(m)) for m in discovered if m in seconds or m in known})
    return merged


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unit", action="extend", nargs="+", default=[], metavar="BINARY",
                    help="C unit-test binary printing TAP (repeatable)")
    ap.add_argument("-k", action="append", default=[], metavar="SUBSTRING", dest="patterns",
                    help="only integration tests whose id contains SUBSTRING")
    ap.add_argument("--no-integration", action="store_true", help="run the unit binaries only")
    ap.add_argument("--unit-timeout", type=float, default=300)
    ap.add_argument("-q", "--quiet", action="store_true", help="dots instead of test names")
    ap.add_argument("--durations", type=int, default=0, metavar="N",
                    help="print the N slowest integration tests")
    ap.add_argument("-j", "--jobs", type=int, default=1, metavar="JOBS",
                    help="integration modules run at once, each in its own process")
    # A module process of a parallel run: one module, its result as JSON.
    ap.add_argument("--module", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("-j must be at least 1")

    # SIGTERM (e.g. from make or CI) unwinds like Ctrl-C so harness teardown runs. A module process is
    # stopped once by its parent, which waits for it: no second signal may cut its teardown short.
    def on_term(signum, frame):
        if args.module:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)

    out = sys.stdout
    passed = failed = 0
    unit_failures = []
    for b in args.unit:
        p, f, fl = run_unit(b, args.unit_timeout, out)
        passed += p
        failed += f
        unit_failures.extend(fl)
    out.flush()

    result = None
    if args.module:
        result = run_integration(args.patterns, 1 if args.quiet else 2, out, args.module)
        with open(args.result_file, "w") as f:
            json.dump(result_json(result), f)
        return 0
    if not args.no_integration:
        try:
            if args.jobs > 1:
                result = run_modules(args.patterns, args.jobs, args.quiet, out)
            else:
                result = run_integration(args.patterns, 1 if args.quiet else 2, out)
        except KeyboardInterrupt:
            out.write("\ninterrupted\n")
            out.write("%d passed, %d failed\n" % (passed, failed + 1))
            return 1
        out.flush()
        passed += len(result.passed_ids)
        failed += len(result.failed_ids) + result.fixture_errors

    # Failure report (stdout), then the one summary line.
    if unit_failures:
        out.write("\n==== unit test failures ====\n")
        for f in unit_failures:
            out.write(f + "\n")
    if result is not None and (result.failures or result.errors or result.unexpectedSuccesses):
        out.write("\n==== integration test failures ====\n")
        for kind, items in (("FAIL", result.failures), ("ERROR", result.errors)):
            for test, tb in items:
                out.write("---- %s: %s\n%s\n" % (kind, id_of(test), tb))
        for test in result.unexpectedSuccesses:
            out.write("---- UNEXPECTED SUCCESS: %s\n" % id_of(test))
    if result is not None:
        if result.skipped:
            out.write("\nskipped %d:\n" % len(result.skipped))
            for test, reason in result.skipped:
                out.write("  %s: %s\n" % (id_of(test), reason))
        if args.durations:
            out.write("\nslowest tests:\n")
            for d, tid in sorted(result.durations_, reverse=True)[:args.durations]:
                out.write("  %6.2fs %s\n" % (d, tid))
        if result.failed_ids or result.fixture_errors:
            out.write("\nfailed tests:\n")
            for tid in result.failed_ids:
                out.write("  %s\n" % tid)
            if result.fixture_errors:
                out.write("  (%d module/class set-up or tear-down errors)\n" % result.fixture_errors)
    out.write("%d passed, %d failed\n" % (passed, failed))
    out.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
