-- wrk script for alertd's ingest benchmarks; configured by environment variables.
--   BENCH_BODY_FILE     a file whose bytes are POSTed as is on every request (batch ingest)
--   BENCH_CONTENT_TYPE  the Content-Type of that body (default application/json)
--   BENCH_PROVIDERS     without a body file: single JSON events spread over this many providers (default 50)
--   BENCH_KEYS          distinct API keys among the single events (default 200)
-- done() prints one line `BENCH_RESULT {json}` that bench/run.py parses.

local body_file = os.getenv("BENCH_BODY_FILE")
local content_type = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
local providers = tonumber(os.getenv("BENCH_PROVIDERS") or "50")
local keys = tonumber(os.getenv("BENCH_KEYS") or "200")
local requests = {}
local count = 0
local next_index = 0

init = function(args)
  local headers = { ["Content-Type"] = content_type }
  if body_file ~= nil and body_file ~= "" then
    local f = assert(io.open(body_file, "rb"))
    local body = f:read("*a")
    f:close()
    requests[1] = wrk.format("POST", nil, headers, body)
  else
    -- 1009 distinct pre-formatted requests (prime, so provider and key cycles do not line up).
    for i = 1, 1009 do
      local body = string.format(
        '{"provider":"provider-%02d","route":"/v1/chat/completions","request_id":"req-%06d",'
          .. '"api_key":"sk-live-%016d","error_type":"upstream_unavailable","status":503,'
          .. '"message":"upstream answered 503 Service Unavailable"}',
        i % providers, i, i % keys)
      requests[i] = wrk.format("POST", nil, headers, body)
    end
  end
  count = #requests
end

request = function()
  next_index = next_index % count + 1
  return requests[next_index]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
