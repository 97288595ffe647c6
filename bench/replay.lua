-- replay.lua - wrk script for `make bench`: send every pre-signed notification
-- of a replay file exactly once, then stop.
--
--   wrk -t T -c C -d 600s -s bench/replay.lua URL -- FILE T DONE_DIR
--
-- FILE has one notification per line, "<Paddle-Signature>\t<body>".  Thread i
-- (0-based) sends lines i+1, i+1+T, i+1+2T, ... on its C/T connections, in
-- file order.  wrk itself cannot stop after N requests, so:
--   * delay() runs before every request (wrk calls it first); it reserves
--     the next line for that connection, or parks the connection for an hour
--     when the thread's lines are all reserved: no extra request is sent;
--   * response() counts answers; when the thread has all of its answers it
--     records its finish time, writes DONE_DIR/done.<i> and stops its loop;
--   * the driver (bench/run.py) sends wrk SIGINT once every thread is done.
-- done() prints one line "REPLAY_RESULT {json}" with per-status counts,
-- first-request/last-response times (CLOCK_MONOTONIC) and wrk's latency
-- percentiles (microseconds) over exactly these requests.

local ffi = require("ffi")
ffi.cdef [[
  struct bench_timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clk_id, struct bench_timespec *tp);
]]
local tsbuf = ffi.new("struct bench_timespec")
local function now()
  ffi.C.clock_gettime(1, tsbuf) -- CLOCK_MONOTONIC
  return tonumber(tsbuf.tv_sec) + tonumber(tsbuf.tv_nsec) * 1e-9
end

-- main state -----------------------------------------------------------------
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- thread state ---------------------------------------------------------------
-- Globals, not locals: done() reads them with thread:get().
requests = {}
total = 0
reserved, issued, answered = 0, 0, 0
codes = {}
stored, duplicate = 0, 0
done_dir = nil
t_first, t_last = nil, nil
finished = false

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  done_dir = args[3]
  local path = wrk.path
  local n = 0
  for line in io.lines(file) do
    if n % nthreads == id then
      local tab = line:find("\t", 1, true)
      local sig, body = line:sub(1, tab - 1), line:sub(tab + 1)
      total = total + 1
      requests[total] = wrk.format("POST", path, {
        ["Content-Type"] = "application/json",
        ["Paddle-Signature"] = sig,
      }, body)
    end
    n = n + 1
  end
end

function delay()
  if reserved < total then
    reserved = reserved + 1
    return 0
  end
  return 3600 * 1000 -- parked: this thread has nothing left to send
end

function request()
  if issued < reserved then
    issued = issued + 1
    if t_first == nil then t_first = now() end
    return requests[issued]
  end
  -- wrk calls request() once before the run to check the script: not sent.
  return requests[1]
end

function response(status, headers, body)
  answered = answered + 1
  codes[status] = (codes[status] or 0) + 1
  if status == 200 then
    if body:find('"stored"', 1, true) then
      stored = stored + 1
    elseif body:find('"duplicate"', 1, true) then
      duplicate = duplicate + 1
    end
  end
  if answered >= total and not finished then
    finished = true
    t_last = now()
    local f = io.open(done_dir .. "/done." .. id, "w")
    if f then f:write(tostring(answered)) f:close() end
    wrk.thread:stop()
  end
end

function done(summary, latency, reqs)
  local out = {}
  local first, last = nil, nil
  local agg = {}
  local sent, got, st, dup = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    sent = sent + (t:get("issued") or 0)
    got = got + (t:get("answered") or 0)
    st = st + (t:get("stored") or 0)
    dup = dup + (t:get("duplicate") or 0)
    local tf, tl = t:get("t_first"), t:get("t_last")
    if tf and (first == nil or tf < first) then first = tf end
    if tl and (last == nil or tl > last) then last = tl end
    local c = t:get("codes") or {}
    for k, v in pairs(c) do agg[tostring(k)] = (agg[tostring(k)] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(agg) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'REPLAY_RESULT {"sent":%d,"answered":%d,"stored":%d,"duplicate":%d,"codes":{%s},' ..
    '"t_first":%.6f,"t_last":%.6f,"wrk_requests":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"lat_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    sent, got, st, dup, table.concat(parts, ","), first or 0, last or 0, summary.requests,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
