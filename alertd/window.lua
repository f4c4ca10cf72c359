-- alertd cluster mode: the rule of alertd/window.py (ProviderWindow.record), applied atomically in Redis to
-- the N failures of a provider that arrived together (`decide` below), for each provider of the call.
-- Every number is a Lua double, and every operation is the one window.py performs, in the same order, so
-- both give bit-identical results for the same inputs (tests/cluster/test_script_matches_core.py feeds both
-- the same traces).
--
-- One call decides for P providers (P >= 1; on Redis Cluster P = 1, all keys of a call in one slot).
-- KEYS[3p-2] recent: list of the last THRESHOLD arrival stamps of provider p, oldest first
-- KEYS[3p-1] buckets: list of "index|count|first|last" (at most BUCKETS + 1 entries), oldest first
-- KEYS[3p]   state: hash la (last alert stamp), ts (throttled since the last alert), ft, at, tt (totals)
-- ARGV: threshold, window, cooldown (seconds), now ("" = Redis TIME; explicit only in tests), then n_p:
-- provider p's failures, for p = 1..P
-- Returns one reply per provider, {now, throttled, k1, count1, first1, throttled_since1, k2, ...}: one group
-- per alerting failure k (1-based within the call); stamps are strings ("%.17g" round-trips a double).

local threshold = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[3])
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local BUCKETS = 60
local width = window / BUCKETS
-- Every key lives as long as anything in it can still matter, from the moment it is written.
local ttl = math.ceil(math.max(window, cooldown) * 1000) + 1000

local function fmt(x)
  return string.format('%.17g', x)
end

-- Provider p's n failures, all at `now`.
local function decide(recent_key, buckets_key, state_key, n)
  -- The old stamps that will be the oldest of the last THRESHOLD after the k-th push, for k = 1..n.
  local old_len = redis.call('LLEN', recent_key)
  local lo = math.max(0, old_len + 1 - threshold)
  local hi = math.min(old_len - 1, old_len + n - threshold)
  local tail = {}
  if lo <= hi then
    tail = redis.call('LRANGE', recent_key, lo, hi)
  end

  -- Buckets: all n failures share `now`, so they land in one bucket (window.py's deque, step by step).
  local index = math.floor(now / width)
  local last_entry = redis.call('LINDEX', buckets_key, -1)
  local merged_count = 0
  if last_entry then
    local b_index, b_count, b_first = string.match(last_entry, '^([^|]+)|([^|]+)|([^|]+)|')
    if tonumber(b_index) == index then
      merged_count = tonumber(b_count)
      redis.call('LSET', buckets_key, -1, b_index .. '|' .. fmt(merged_count + n) .. '|' .. b_first .. '|' .. fmt(now))
    else
      last_entry = nil
    end
  end
  if not last_entry then
    redis.call('RPUSH', buckets_key, fmt(index) .. '|' .. fmt(n) .. '|' .. fmt(now) .. '|' .. fmt(now))
    local oldest = math.floor((now - window) / width)
    while true do
      local head = redis.call('LINDEX', buckets_key, 0)
      if tonumber(string.match(head, '^([^|]+)|')) < oldest then
        redis.call('LPOP', buckets_key)
      else
        break
      end
    end
  end

  local last_alert = tonumber(redis.call('HGET', state_key, 'la') or '')
  local throttled_since = tonumber(redis.call('HGET', state_key, 'ts') or '0')
  local throttled = 0
  local out = {fmt(now), 0}
  local live = nil -- the buckets holding a failure no older than WINDOW, loaded at the first alert

  for k = 1, n do
    if old_len + k >= threshold then
      local i = old_len + k - threshold -- 0-based position in the old list of the oldest of the last THRESHOLD
      local oldest = now
      if i < old_len then
        oldest = tonumber(tail[i - lo + 1])
      end
      if not (now - oldest > window) then
        if last_alert ~= nil and now - last_alert < cooldown then
          throttled = throttled + 1
          throttled_since = throttled_since + 1
        else
          last_alert = now
          local cutoff = now - window
          if live == nil then
            live = {}
            local first_live = math.floor(cutoff / width)
            for _, entry in ipairs(redis.call('LRANGE', buckets_key, 0, -1)) do
              local b_index, b_count, b_first, b_last = string.match(entry, '^([^|]+)|([^|]+)|([^|]+)|([^|]+)$')
              if tonumber(b_index) >= first_live and tonumber(b_last) >= cutoff then
                table.insert(live, {tonumber(b_index), tonumber(b_count), tonumber(b_first)})
              end
            end
          end
          -- The count after the k-th failure: the current bucket held merged_count + k at that moment.
          local estimate = 0
          for _, b in ipairs(live) do
            if b[1] == index then
              estimate = estimate + merged_count + k
            else
              estimate = estimate + b[2]
            end
          end
          local first = math.max(live[1][3], cutoff)
          table.insert(out, k)
          table.insert(out, math.max(estimate, threshold))
          table.insert(out, fmt(first))
          table.insert(out, throttled_since)
          throttled_since = 0
        end
      end
    end
  end
  out[2] = throttled

  local stamp = fmt(now)
  local left = math.min(n, threshold)
  while left > 0 do -- in chunks: unpack() is bounded by Lua's C stack
    local stamps = {}
    for _ = 1, math.min(left, 1000) do
      table.insert(stamps, stamp)
    end
    redis.call('RPUSH', recent_key, unpack(stamps))
    left = left - #stamps
  end
  redis.call('LTRIM', recent_key, -threshold, -1)
  local alerts = (#out - 2) / 4
  redis.call('HINCRBY', state_key, 'ft', n)
  if alerts > 0 then
    redis.call('HINCRBY', state_key, 'at', alerts)
    redis.call('HSET', state_key, 'la', fmt(last_alert))
  end
  if throttled > 0 then
    redis.call('HINCRBY', state_key, 'tt', throttled)
  end
  redis.call('HSET', state_key, 'ts', throttled_since)
  redis.call('PEXPIRE', recent_key, ttl)
  redis.call('PEXPIRE', buckets_key, ttl)
  redis.call('PEXPIRE', state_key, ttl)
  return out
end

local replies = {}
for p = 1, #KEYS / 3 do
  replies[p] = decide(KEYS[3 * p - 2], KEYS[3 * p - 1], KEYS[3 * p], tonumber(ARGV[4 + p]))
end
return replies
