-- wrk script of bench/scan_load.py: reader terminals' pre-signed verify requests, fresh
-- dynamic codes and replays of codes already answered, each request sent exactly once,
-- and every answer checked against what that request deserved.
--
--   wrk -t1 -c32 -d20s -s bench/scan_load.lua http://127.0.0.1:PORT -- pool FILE
--   wrk -t1 -c32 -d20s -s bench/scan_load.lua http://127.0.0.1:PORT -- get /healthz
--
-- "pool FILE": records of "TAG KIND VUID AFTER LENGTH\n" followed by LENGTH bytes of a
-- complete HTTP/1.1 request carrying "X-Request-Id: TAG" (the platform echoes it), sent in
-- pool order. KIND "f" is a fresh code: its answer must be 200 for that card (VUID) as a
-- dynamic code. KIND "r" is a replay of the code of request AFTER: it is held back until
-- AFTER's answer has come back (a connection may still wait for an old answer while the
-- others move on, so pool distance alone proves nothing), and its answer must be 409
-- CODE_USED. One thread only: the answers seen are this thread's. "get PATH": the same GET
-- every time (the baseline), every answer 200.
--
-- done() prints one line
--   BENCH_RESULT {...json...}
-- and, for the first wrong answers, lines BENCH_FIRST_ERROR <tag> <status> <start of the body>.

local threads = {}
local EXHAUSTED_TAG = "scan-pool-exhausted"

function setup(thread)
  table.insert(threads, thread)
end

-- Per-thread state.
local pool, expect, answered = {}, {}, {}
local held = {}  -- replays reached before their original's answer, oldest first
local next_index = 1
local fixed_request = nil
loaded, exhausted, held_back = 0, 0, 0
sent_fresh, sent_replay, sent_get = 0, 0, 0
fresh_ok, fresh_bad, replay_used, replay_bad = 0, 0, 0, 0
get_ok, get_bad, untagged, duplicated = 0, 0, 0, 0
first_error = ""

local function read_pool(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  local position = 1
  while position <= #data do
    local newline = data:find("\n", position, true)
    if newline == nil then break end
    local tag, kind, vuid, after, length = data:sub(position, newline - 1):match("^(%S+) (%a) (%x+) (%S+) (%d+)$")
    length = tonumber(length)
    pool[#pool + 1] = { tag = tag, kind = kind, after = after, raw = data:sub(newline + 1, newline + length) }
    expect[tag] = { kind = kind, vuid = vuid }
    position = newline + length + 1
  end
  loaded = #pool
end

function init(args)
  if args[1] == "pool" then
    read_pool(args[2])
  elseif args[1] == "get" then
    fixed_request = wrk.format("GET", args[2])
  else
    error("usage: -- pool FILE | -- get PATH")
  end
end

function request()
  if fixed_request ~= nil then
    sent_get = sent_get + 1
    return fixed_request
  end
  local record = nil
  for index, waiting in ipairs(held) do
    if answered[waiting.after] then
      record = table.remove(held, index)
      break
    end
  end
  -- Not #pool: taken requests leave holes, and # of a table with holes may be any border.
  while record == nil and next_index <= loaded do
    record = pool[next_index]
    pool[next_index] = nil
    next_index = next_index + 1
    if record.kind == "r" and not answered[record.after] then
      held[#held + 1] = record
      held_back = held_back + 1
      record = nil
    end
  end
  if record == nil then
    -- Out of requests: never send one twice. Stop; bench/scan_load.py fails the run.
    exhausted = exhausted + 1
    wrk.thread:stop()
    return wrk.format("GET", "/healthz", { ["X-Request-Id"] = EXHAUSTED_TAG })
  end
  if record.kind == "f" then sent_fresh = sent_fresh + 1 else sent_replay = sent_replay + 1 end
  return record.raw
end

local errors_noted = 0

local function note_error(tag, status, body)
  -- The first few wrong answers, one per line: enough to tell a pattern from an accident.
  if errors_noted < 5 then
    errors_noted = errors_noted + 1
    local line = tostring(tag) .. " " .. tostring(status) .. " " .. string.sub(string.gsub(body or "", "[\r\n]", " "), 1, 300)
    first_error = first_error == "" and line or (first_error .. "\n" .. line)
  end
end

function response(status, headers, body)
  if fixed_request ~= nil then
    if status == 200 then get_ok = get_ok + 1 else get_bad = get_bad + 1; note_error("get", status, body) end
    return
  end
  local tag = headers["X-Request-Id"] or headers["x-request-id"]
  local wanted = tag and expect[tag]
  if tag == EXHAUSTED_TAG then
    return
  elseif wanted == nil then
    untagged = untagged + 1
    note_error(tag, status, body)
  elseif answered[tag] then
    duplicated = duplicated + 1
    note_error(tag, status, body)
  else
    answered[tag] = true
    if wanted.kind == "f" then
      if status == 200 and body:find('"health_card_id"%s*:%s*"' .. wanted.vuid .. '"')
          and body:find('"code_type"%s*:%s*"dynamic"') then
        fresh_ok = fresh_ok + 1
      else
        fresh_bad = fresh_bad + 1
        note_error(tag, status, body)
      end
    else
      if status == 409 and body:find('"code"%s*:%s*"CODE_USED"') then
        replay_used = replay_used + 1
      else
        replay_bad = replay_bad + 1
        note_error(tag, status, body)
      end
    end
  end
end

function done(summary, latency, requests)
  local keys = {
    "loaded", "exhausted", "held_back", "sent_fresh", "sent_replay", "sent_get", "fresh_ok", "fresh_bad",
    "replay_used", "replay_bad", "get_ok", "get_bad", "untagged", "duplicated",
  }
  local totals, parts = {}, {}
  local first = ""
  for _, key in ipairs(keys) do totals[key] = 0 end
  for _, thread in ipairs(threads) do
    for _, key in ipairs(keys) do totals[key] = totals[key] + (thread:get(key) or 0) end
    if first == "" then first = thread:get("first_error") or "" end
  end
  for _, key in ipairs(keys) do parts[#parts + 1] = string.format('"%s":%d', key, totals[key]) end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,%s,' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"status_errors":%d}\n',
    summary.requests, summary.duration, table.concat(parts, ","),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    errors.connect, errors.read, errors.write, errors.timeout, errors.status))
  for line in string.gmatch(first, "[^\n]+") do
    io.write("BENCH_FIRST_ERROR " .. line .. "\n")
  end
end
