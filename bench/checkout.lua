-- wrk script: each request checks out the next order of a batch_init population ("0", "1", ...),
-- distinct across wrk threads (thread k takes orders k, k + T, k + 2T, ...).
-- Used by bench/checkout.sh; see docs/BENCHMARKS.md.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("first", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  step = tonumber(os.getenv("WRK_THREADS") or "2")
  nxt = first
  codes = {}
end

function request()
  local path = "/orders/checkout/" .. nxt
  nxt = nxt + step
  return wrk.format("POST", path)
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format("checkouts: %d\n", summary.requests))
  io.write(string.format("checkouts/s: %.0f\n", summary.requests / secs))
  for _, p in ipairs({50, 90, 99}) do
    io.write(string.format("p%d: %.2f ms\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("max: %.2f ms\n", latency.max / 1000))
  io.write(string.format("non-2xx: %d, socket errors: %d\n", summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
