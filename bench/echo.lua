-- wrk script for bench/core.sh: one MCP `tools/call` of the `echo` tool per
-- request, in the stateless 2026-07-28 form (no session, no initialize), so
-- the very same bytes can be sent to the upstream directly and to metamcp.
--
-- Every response is checked: a status other than 200, or a body without the
-- echoed text or with an error in it, is counted. done() prints one line
-- starting with "WRK_RESULT " followed by a JSON object that core.sh parses:
--   requests, duration_us, p50_us, p90_us, p99_us, max_us (wrk's latency
--   histogram, microseconds), non200, bad_body, and wrk's socket errors.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "echo"
-- The gateway needs credentials: core.sh passes the header in WRK_AUTH
-- (empty for the upstream itself).
local auth = os.getenv("WRK_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
  .. '"arguments":{"message":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":'
  .. '"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'

-- Threads, kept by setup() so done() can add up their counters.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per-thread counters (each wrk thread has its own Lua state).
non200 = 0
bad_body = 0

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  elseif not body
      or not string.find(body, "hello", 1, true)
      or string.find(body, '"isError":true', 1, true)
      or string.find(body, '"error":', 1, true) then
    bad_body = bad_body + 1
  end
end

function done(summary, latency, requests)
  local n200, nbad = 0, 0
  for _, t in ipairs(threads) do
    n200 = n200 + t:get("non200")
    nbad = nbad + t:get("bad_body")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"non200":%d,"bad_body":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    n200, nbad, e.connect, e.read, e.write, e.timeout))
end
