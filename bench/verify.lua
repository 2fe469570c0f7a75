-- wrk script of bench/codes.py: replays pre-built requests, each exactly once.
--
--   wrk -t1 -c16 -d10s -s bench/verify.lua http://127.0.0.1:PORT -- pool FILE
--   wrk -t1 -c16 -d10s -s bench/verify.lua http://127.0.0.1:PORT -- get /plain
--
-- "pool FILE": FILE holds complete HTTP/1.1 requests, each written as its length in
-- bytes, a newline, then the request bytes. Signed requests carry a one-time nonce and a
-- one-time dynamic code, so none may be sent twice: with several threads each takes
-- every n-th request, and a thread that runs out stops and reports it instead of
-- replaying. "get PATH": the same GET every time (the baseline).
--
-- Every response that is not 2xx is counted, and done() prints one line
--   BENCH_RESULT {...json...}
-- plus, when something failed, BENCH_FIRST_ERROR <status> <start of the body>.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count)
  table.insert(threads, thread)
end

-- Per-thread state (each thread has its own Lua state).
local pool = {}
local next_index = 1
local fixed_request = nil
loaded = 0
sent = 0
ok = 0
not_ok = 0
exhausted = 0
first_error = ""

local function read_pool(path, index, stride)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  local position, record = 1, 0
  while position <= #data do
    local newline = data:find("\n", position, true)
    if newline == nil then break end
    local length = tonumber(data:sub(position, newline - 1))
    record = record + 1
    if (record - index) % stride == 0 then
      pool[#pool + 1] = data:sub(newline + 1, newline + length)
    end
    position = newline + length + 1
  end
  loaded = #pool
end

function init(args)
  local mode = args[1]
  local index = thread_index or 1
  local stride = tonumber(args[3] or "1")
  if mode == "pool" then
    read_pool(args[2], index, stride)
  elseif mode == "get" then
    fixed_request = wrk.format("GET", args[2])
  else
    error("usage: -- pool FILE [THREADS] | -- get PATH")
  end
end

function request()
  if fixed_request ~= nil then
    sent = sent + 1
    return fixed_request
  end
  -- Not #pool: taken requests leave holes, and # of a table with holes may be any border.
  if next_index > loaded then
    -- Out of requests: never replay one. Stop this thread; bench/codes.py fails the run.
    exhausted = exhausted + 1
    wrk.thread:stop()
    return wrk.format("GET", "/healthz")
  end
  local raw = pool[next_index]
  pool[next_index] = nil
  next_index = next_index + 1
  sent = sent + 1
  return raw
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    not_ok = not_ok + 1
    if first_error == "" then
      first_error = tostring(status) .. " " .. string.sub(string.gsub(body or "", "[\r\n]", " "), 1, 300)
    end
  end
end

function done(summary, latency, requests)
  local totals = { loaded = 0, sent = 0, ok = 0, not_ok = 0, exhausted = 0 }
  local first = ""
  for _, thread in ipairs(threads) do
    for key, _ in pairs(totals) do
      totals[key] = totals[key] + (thread:get(key) or 0)
    end
    if first == "" then first = thread:get("first_error") or "" end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"loaded":%d,"sent":%d,"ok":%d,' ..
    '"not_ok":%d,"exhausted":%d,"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"status_errors":%d}\n',
    summary.requests, summary.duration, summary.bytes, totals.loaded, totals.sent, totals.ok,
    totals.not_ok, totals.exhausted, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean,
    errors.connect, errors.read, errors.write, errors.timeout, errors.status))
  if first ~= "" then
    io.write("BENCH_FIRST_ERROR " .. first .. "\n")
  end
end
