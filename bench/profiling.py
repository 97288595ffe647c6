"""Where the time goes: callgrind counts of the worker's hot path and of the
real worker, system calls per request, the latency of one request by stage."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

from measure import BUILD_BENCH, percentile  # sets sys.path for tests/harness.py
from harness import wait_until
from stack import run_wrk


def annotate(path, inclusive=True):
    """callgrind_annotate -> (program total Ir, {function: Ir})."""
    argv = ["callgrind_annotate", "--inclusive=%s" % ("yes" if inclusive else "no"),
            "--threshold=100", path]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    total = 0
    m = re.search(r"^\s*([\d,]+)\s*(?:\([^)]*\)\s*)?PROGRAM TOTALS", out, re.M)
    if m:
        total = int(m.group(1).replace(",", ""))
    funcs = {}
    for line in out.splitlines():
        mm = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?\*?\s*(\S.*?)\s*$", line)
        if not mm or "PROGRAM TOTALS" in line:
            continue
        name = mm.group(2)
        # "file:function [object]" -> function
        fn = name.split(":", 1)[1] if ":" in name else name
        fn = re.sub(r"\s*\[.*\]$", "", fn).strip()
        fn = re.sub(r"\.(constprop|isra|part|cold)(\.\d+)*$", "", fn)
        fn = re.sub(r"\.(constprop|isra|part|cold)(\.\d+)*$", "", fn)
        ir = int(mm.group(1).replace(",", ""))
        funcs[fn] = max(funcs.get(fn, 0), ir)
    return total, funcs


def profile_driver(args, body, secret):
    """verify + parse + bind of one ~5 KB event in a small driver that links
    fcgi/sig.c and fcgi/event.c: callgrind Ir per event and native ns per event."""
    exe = args.driver
    if not exe or not os.path.exists(exe):
        return None
    d = os.path.join(BUILD_BENCH, "callgrind")
    os.makedirs(d, exist_ok=True)
    bpath = os.path.join(d, "event-5k.json")
    with open(bpath, "wb") as f:
        f.write(body)
    # The fastest of several runs: on a shared machine the others are slowed
    # by whatever else runs on the core, which is not the worker's cost.
    runs = []
    for _ in range(args.driver_runs):
        native = subprocess.run([exe, bpath, secret, str(args.driver_iterations)], capture_output=True,
                                text=True, timeout=300)
        runs.append(json.loads(native.stdout.strip().splitlines()[-1])["ns_per_event"])
    runs.sort()
    nat = {"iterations": args.driver_iterations, "runs": len(runs), "ns_per_event": runs[0],
           "ns_median": runs[len(runs) // 2]}
    res = {"body_bytes": len(body), "native": nat}
    if shutil.which("valgrind"):
        out = os.path.join(d, "callgrind.driver.out")
        k = 2000
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                        "--toggle-collect=profile_one", exe, bpath, secret, str(k)],
                       capture_output=True, text=True, timeout=600)
        total, funcs = annotate(out)
        res["callgrind_file"] = out
        res["ir_per_event"] = total / k
        res["ir"] = {f: funcs.get(f, 0) / k for f in
                     ("profile_one", "sig_parse", "sig_verify", "sig_compute", "event_parse",
                      "yajl_parse", "crypto_auth_hmacsha256_update", "bind_params")}
        res["ns_per_ir"] = nat["ns_per_event"] / max(1.0, res["ir_per_event"])
    return res


def profile_worker(stack, args, replay_lines, k):
    """The real worker under callgrind for k requests (1 connection): Ir per
    request for the whole loop, split by function (inclusive)."""
    if not shutil.which("valgrind"):
        return None
    H = stack.H
    d = os.path.join(BUILD_BENCH, "callgrind")
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        if name.startswith("callgrind.worker."):
            os.unlink(os.path.join(d, name))
    wrapper = os.path.join(H.tmpdir, "paddlehook-callgrind")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/callgrind.worker.%%p "
                "%s \"$@\"\n" % (d, H.binary))
    os.chmod(wrapper, 0o755)
    replay = os.path.join(H.tmpdir, "replay-callgrind.txt")
    with open(replay, "wb") as f:
        f.writelines(replay_lines[:k])
    original_bin, original_workers = H.binary, H.workers
    stack.reset_db()
    H.stop_serve()
    try:
        H.binary, H.workers = wrapper, 1
        H.start_serve()
        H.binary = original_bin
        wait_until(lambda: H.get("/paddle/healthz", timeout=10).status == 200, timeout=60,
                   what="worker under callgrind")
        url = "%s/paddle/webhooks/%s" % (H.base_url, stack.ep.id)
        r = run_wrk(stack, url, replay, 1, stack.worker_pids, "callgrind", timeout=900)
        H.stop_serve(timeout=60)
    finally:
        H.binary, H.workers = original_bin, original_workers
    files = [os.path.join(d, n) for n in os.listdir(d) if n.startswith("callgrind.worker.")]
    best = None
    for path in files:
        total, funcs = annotate(path)
        if "webhook_handle" in funcs and (best is None or total > best[1]):
            best = (path, total, funcs)
    H.start_serve()
    H.wait_healthy()
    if best is None:
        return {"error": "no worker profile found in %s" % d}
    path, total, funcs = best
    n = r["events"]
    names = ("webhook_handle", "FCGX_Accept_r", "FCGX_Finish_r", "http_request_init",
             "http_read_body", "sig_verify", "sig_parse", "event_parse", "store_ingest",
             "PQexecPrepared", "log_line", "worker_endpoint", "refresh", "yajl_parse",
             "crypto_auth_hmacsha256_update", "http_respond_status", "FCGX_GetParam",
             "pqParseInput3", "pqPutMsgEnd", "vfprintf", "__vfprintf_internal")
    loop = sum(funcs.get(f, 0) for f in ("FCGX_Accept_r", "refresh", "webhook_handle",
                                          "FCGX_Finish_r", "http_request_init"))
    return {"file": path, "requests": n, "ok": r["verified"],
            "ir_total_per_event": total / max(1, n), "ir_loop_per_event": loop / max(1, n),
            "ir": {f: funcs.get(f, 0) / max(1, n) for f in names}}


def syscalls_per_event(stack, url, replay, n):
    """strace -c on every worker during an n-event replay: syscalls per event."""
    if not shutil.which("strace"):
        return None
    pids = stack.worker_pids()
    out = os.path.join(stack.H.tmpdir, "strace.txt")
    argv = ["strace", "-c", "-f", "-o", out]
    for p in pids:
        argv += ["-p", str(p)]
    st = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        stack.reset_db()
        r = run_wrk(stack, url, replay, 4, stack.worker_pids, "paddlehook", 300)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(30)
    calls = {}
    for line in open(out):
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",):
            try:
                calls[parts[-1]] = int(parts[3])
            except ValueError:
                pass
    return {"events": r["events"], "per_event": {k: v / max(1, r["events"]) for k, v in
                                                 sorted(calls.items(), key=lambda kv: -kv[1])}}


def _log_values(path, offset, pattern):
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read().decode("utf-8", "replace")
    return sorted(float(x) for x in re.findall(pattern, data))


def latency_decomposition(stack, url, replay):
    H = stack.H
    access = os.path.join(H.nginx_dir, "access.log")
    a0, s0 = os.path.getsize(access), os.path.getsize(H.serve_log)
    stack.reset_db()
    H.psql("SELECT pg_stat_statements_reset()")
    r = run_wrk(stack, url, replay, 1, stack.worker_pids, "paddlehook", 300)
    time.sleep(1.5)  # the access log is flushed every second
    rt = _log_values(access, a0, r"\" 200 .*? rt=([\d.]+)")
    urt = _log_values(access, a0, r"\" 200 .*? urt=([\d.]+)")
    dur = _log_values(H.serve_log, s0, r"event=request .*?status=200 .*?duration_ms=([\d.]+)")
    pg = H.sql("SELECT mean_exec_time, stddev_exec_time FROM pg_stat_statements "
               "WHERE query LIKE 'SELECT paddle.ingest_event%' ORDER BY calls DESC LIMIT 1")

    def pp(vals, scale=1.0):
        return "%.2f / %.2f" % (percentile(vals, 50) * scale, percentile(vals, 99) * scale) if vals else "?"
    return {"events": r["events"], "wrk": "%.2f / %.2f" % (r["lat_ms"]["p50"], r["lat_ms"]["p99"]),
            "nginx_rt": pp(rt, 1000.0), "nginx_urt": pp(urt, 1000.0), "worker": pp(dur),
            "pg_mean": float(pg[0][0]) if pg else 0.0, "pg_stddev": float(pg[0][1]) if pg else 0.0}
