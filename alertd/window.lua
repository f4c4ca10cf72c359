-- alertd cluster mode: the rule of alertd/window.py (ProviderWindow.record, change_rule, resolve_due), applied
-- atomically in Redis, for each provider of the call. Every number is a Lua double, and every operation is
-- the one window.py performs, in the same order, so both give bit-identical results for the same inputs
-- (tests/cluster/test_script_matches_core.py feeds both the same traces).
--
-- ARGV[1] mode: 'd' (decide) or 'r' (resolve); ARGV[2] now ("" = Redis TIME; explicit only in tests).
--
-- Mode 'd': one call decides for P providers' failures (P >= 1; on Redis Cluster P = 1: a call's keys share
-- a slot). Per provider p:
--   KEYS[3p-2] recent: list of the last CAPACITY arrival stamps (CAPACITY: the highest tier's threshold)
--   KEYS[3p-1] buckets: list of "index|count|first|last" (at most BUCKETS + 1 entries), oldest first
--   KEYS[3p]   state: hash la (last alert), ft, at, tt (totals), ta (tt at the last alert), c1..cL (each
--              tier's cooldown start), es, ea, et, fb, lh (the open episode: start, alerts, throttled hits,
--              ft - its failures, last threshold hit), lr (last resolved), rl (the rule's signature)
--   ARGV, from a cursor: n (failures), window, cooldown, resolve (seconds), signature, L, threshold1..L
--   (the signature is "window|L|digest|levels", levels the tiers' levels, URL-quoted, joined by ",": a different
--   one applies window.py's change_rule first; an older alertd's "window|L|digest" has no levels).
-- Reply per provider: {now, throttled, deadline, resolution, k1, count1, first1, since1, tier1, start1,
--   rank1, k2, ...}: deadline of the episode open after the call ("" when none); resolution: "" or {start,
--   alerts, throttled, failures, last hit} of the episode resolved lazily (at now) before the failures were
--   weighed; one group of 7 per alerting failure k (1-based; tier 0-based; start and rank of its episode).
--
-- Mode 'r': KEYS[p] state of provider p, ARGV[2 + p] its resolve seconds. Resolves the open episode whose
-- deadline is reached, atomically: exactly one caller gets it. Reply per provider: {now, deadline,
-- resolution} (deadline "" when not firing after the call).
--
-- Stamps are strings ("%.17g" round-trips a double); counts are integers.

local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local BUCKETS = 60

local function fmt(x)
  return string.format('%.17g', x)
end
local NOW = fmt(now)

-- "a,b,,c" -> {"a", "b", "", "c"}
local function split(text)
  local out = {}
  local from = 1
  while true do
    local comma = string.find(text, ',', from, true)
    if not comma then
      out[#out + 1] = string.sub(text, from)
      return out
    end
    out[#out + 1] = string.sub(text, from, comma - 1)
    from = comma + 1
  end
end

-- A signature's window, digest and levels (nil when it names none: an older alertd's).
local function parse_sig(sig)
  local window, rest = string.match(sig, '^([^|]+)|[^|]+|(.*)$')
  local bar = string.find(rest, '|', 1, true)
  if not bar then
    return tonumber(window), rest, nil
  end
  return tonumber(window), string.sub(rest, 1, bar - 1), split(string.sub(rest, bar + 1))
end

local function cfields(L)
  local fields = {}
  for i = 1, L do
    fields[i] = 'c' .. i
  end
  return fields
end

-- window.py's _count over a list of stamps, into a fresh bucket list (change_rule with another WINDOW).
local function rebuild(buckets_key, stamps, window, width)
  redis.call('DEL', buckets_key)
  local list = {}
  for _, at in ipairs(stamps) do
    local index = math.floor(at / width)
    local last = list[#list]
    if last and last[1] == index then
      last[2] = last[2] + 1
      last[4] = at
    else
      table.insert(list, {index, 1, at, at})
      local oldest = math.floor((at - window) / width)
      while list[1][1] < oldest do
        table.remove(list, 1)
      end
    end
  end
  for _, b in ipairs(list) do
    redis.call('RPUSH', buckets_key, fmt(b[1]) .. '|' .. fmt(b[2]) .. '|' .. fmt(b[3]) .. '|' .. fmt(b[4]))
  end
end

local function decide(recent_key, buckets_key, state_key, n, window, cooldown, resolve, sig, th)
  local L = #th
  local cap = th[L]
  local width = window / BUCKETS
  local head = {'rl', 'ta', 'es', 'ea', 'et', 'fb', 'lh', 'ft', 'tt', 'c1'}
  for i = 2, L do
    head[9 + i] = 'c' .. i
  end
  local st = redis.call('HMGET', state_key, unpack(head))
  local old_sig = st[1]
  local ft = tonumber(st[8] or '0')
  local tt = tonumber(st[9] or '0')
  -- Derived, so that a throttled hit writes fewer fields: throttled since the last alert = tt - ta, and
  -- the episode's failures = ft - fb.
  local throttled_since = tt - tonumber(st[2] or tt)
  local es = tonumber(st[3] or '')
  local ea = tonumber(st[4] or '0')
  local et = tonumber(st[5] or '0')
  local ef = ft - tonumber(st[6] or ft)
  local lh = tonumber(st[7] or '0')
  local cd = {}
  local had = {}
  for i = 1, L do
    had[i] = st[9 + i] and true or false
    cd[i] = tonumber(st[9 + i] or '')
  end

  -- `old`: the last CAPACITY stamps before this call, oldest first; read only where the tier checks look
  -- (old[m + k - t + 1] for the k-th failure and a threshold t > k), and at an alert from there to the end.
  local m_all = redis.call('LLEN', recent_key)
  local m = math.min(m_all, cap)
  local base = m_all - m -- list index (0-based) of old[1]
  local old = {}
  local old_lo, old_hi = math.max(1, m + 2 - cap), math.min(m, m + n - th[1] + 1)
  local function load(lo, hi)
    if lo <= hi then
      local got = redis.call('LRANGE', recent_key, base + lo - 1, base + hi - 1)
      for j = lo, hi do
        old[j] = tonumber(got[j - lo + 1])
      end
    end
  end
  local loaded_all = false

  local older = old_sig == false and not had[1] and tonumber(redis.call('HGET', state_key, 'la') or '')
  if older then
    -- State of an older alertd (one cooldown, `la`): every tier's cooldown runs from it, as restore() does.
    for i = 1, L do
      cd[i] = older
    end
  elseif old_sig ~= false and old_sig ~= sig then
    -- window.py's change_rule: the n-th tier of a level keeps the cooldown of the old rule's n-th tier of that
    -- level (carry_cooldowns), a tier at a new level starts with none; buckets again from the stamps kept.
    local old_window, old_digest, old_levels = parse_sig(old_sig)
    local _, digest, levels = parse_sig(sig)
    if old_levels == nil then
      if old_digest ~= digest then
        -- An older alertd's signature names no levels: the latest cooldown for every tier, as it did.
        local latest = nil
        local olds = redis.call('HMGET', state_key, unpack(cfields(tonumber(string.match(old_sig, '^[^|]+|([^|]+)|')))))
        for _, c in ipairs(olds) do
          local v = tonumber(c or '')
          if v ~= nil and (latest == nil or v > latest) then
            latest = v
          end
        end
        for i = 1, L do
          cd[i] = latest
        end
      end -- the same rule, signed by an older alertd: nothing changes
    else
      local olds = redis.call('HMGET', state_key, unpack(cfields(#old_levels)))
      local carried = {}
      local seen = {}
      for j, level in ipairs(old_levels) do
        local nth = (seen[level] or 0) + 1
        seen[level] = nth
        carried[level .. ',' .. nth] = tonumber(olds[j] or '')
      end
      seen = {}
      for i = 1, L do
        local level = levels[i]
        local nth = (seen[level] or 0) + 1
        seen[level] = nth
        cd[i] = carried[level .. ',' .. nth]
      end
    end
    if old_window ~= window then
      load(1, m)
      loaded_all = true
      rebuild(buckets_key, old, window, width)
    end
  end

  -- Lazy resolution: the episode's deadline passed before these failures are weighed.
  local resolution = ''
  if es ~= nil and not (now < lh + resolve) then
    resolution = {fmt(es), ea, et, ef, fmt(lh)}
    es = nil
    for i = 1, L do
      cd[i] = nil
    end
  end

  -- Buckets: all n failures share `now`, so they land in one bucket (window.py's deque, step by step).
  local index = math.floor(now / width)
  local merged_count = 0
  if n > 0 then
    local last_entry = redis.call('LINDEX', buckets_key, -1)
    if last_entry then
      local b_index, b_count, b_first = string.match(last_entry, '^([^|]+)|([^|]+)|([^|]+)|')
      if tonumber(b_index) == index then
        merged_count = tonumber(b_count)
        redis.call('LSET', buckets_key, -1, b_index .. '|' .. fmt(merged_count + n) .. '|' .. b_first .. '|' .. NOW)
      else
        last_entry = nil
      end
    end
    if not last_entry then
      redis.call('RPUSH', buckets_key, fmt(index) .. '|' .. fmt(n) .. '|' .. NOW .. '|' .. NOW)
      local oldest = math.floor((now - window) / width)
      while true do
        local head_entry = redis.call('LINDEX', buckets_key, 0)
        if tonumber(string.match(head_entry, '^([^|]+)|')) < oldest then
          redis.call('LPOP', buckets_key)
        else
          break
        end
      end
    end
  end

  if not loaded_all then
    load(old_lo, old_hi)
  end
  local throttled = 0
  local alerts = 0
  local out = {NOW, 0, '', resolution}
  local live = nil -- the buckets holding a failure no older than WINDOW, loaded at the first alert
  local cutoff = now - window

  for k = 1, n do
    local firing = es ~= nil
    if firing then
      ef = ef + 1
    end
    -- The highest tier reached: its threshold-th most recent stamp no older than WINDOW.
    local tier = 0
    for i = L, 1, -1 do
      local t = th[i]
      if m + k >= t then
        local stamp = now
        if t > k then
          stamp = old[m + k - t + 1]
        end
        if now - stamp <= window then
          tier = i
          break
        end
      end
    end
    if tier > 0 then
      local since = cd[tier]
      if since ~= nil and now - since < cooldown then
        throttled = throttled + 1
        throttled_since = throttled_since + 1
        if firing then
          et = et + 1
          lh = now
        end
      else
        cd[tier] = now
        lh = now
        alerts = alerts + 1
        -- count_in_window and first_in_window after the k-th failure.
        if not loaded_all then -- the stamps kept after the k-th failure start at old[old_lo] or later
          load(math.max(old_lo, old_hi + 1), m)
          loaded_all = true
        end
        local size = math.min(m + k, cap)
        local start = math.max(0, m + k - cap) -- 0-based position in `old` of the oldest stamp kept
        local oldest_kept = now
        if start < m then
          oldest_kept = old[start + 1]
        end
        local count, first
        if size < cap or oldest_kept < cutoff then
          count = math.min(k, cap)
          first = nil
          for j = start + 1, m do
            if old[j] >= cutoff then
              count = count + 1
              if first == nil then
                first = old[j]
              end
            end
          end
          if first == nil then
            first = now
          end
        else
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
          count = math.max(estimate, size)
          first = math.max(live[1][3], cutoff)
        end
        if firing then
          ea = ea + 1
        else
          es = now
          ea = 1
          et = 0
          ef = count
        end
        local o = #out
        out[o + 1] = k
        out[o + 2] = count
        out[o + 3] = fmt(first)
        out[o + 4] = throttled_since
        out[o + 5] = tier - 1
        out[o + 6] = fmt(es)
        out[o + 7] = ea
        throttled_since = 0
      end
    end
  end
  out[2] = throttled

  if n > 0 then
    local stamp = NOW
    local left = math.min(n, cap)
    while left > 0 do -- in chunks: unpack() is bounded by Lua's C stack
      local stamps = {}
      for _ = 1, math.min(left, 1000) do
        table.insert(stamps, stamp)
      end
      redis.call('RPUSH', recent_key, unpack(stamps))
      left = left - #stamps
    end
  end
  if n > 0 or m_all > cap then
    redis.call('LTRIM', recent_key, -cap, -1)
  end

  -- Only what changed is written.
  local set = {}
  local w = 0
  local function put(field, value)
    set[w + 1] = field
    set[w + 2] = value
    w = w + 2
  end
  local del = {}
  if old_sig ~= sig then
    put('rl', sig)
  end
  local ft_new = ft + n
  local tt_new = tt + throttled
  if n > 0 then
    put('ft', ft_new)
  end
  if throttled > 0 then
    put('tt', tt_new)
  end
  local ta = tt_new - throttled_since
  if ta ~= tonumber(st[2] or '') then
    put('ta', ta)
  end
  if alerts > 0 then
    put('la', NOW)
    redis.call('HINCRBY', state_key, 'at', alerts)
  end
  if resolution ~= '' then
    put('lr', NOW)
  end
  for i = 1, L do
    local c = cd[i]
    if c == nil then
      if had[i] then
        del[#del + 1] = 'c' .. i
      end
    elseif c ~= tonumber(st[9 + i] or '') then
      put('c' .. i, c == now and NOW or fmt(c))
    end
  end
  local span = math.max(window, cooldown)
  if es ~= nil then
    if es ~= tonumber(st[3] or '') then
      put('es', es == now and NOW or fmt(es))
    end
    if ea ~= tonumber(st[4] or '') then
      put('ea', ea)
    end
    if et ~= tonumber(st[5] or '') then
      put('et', et)
    end
    local fb = ft_new - ef
    if fb ~= tonumber(st[6] or '') then
      put('fb', fb)
    end
    if lh ~= tonumber(st[7] or '') then
      put('lh', lh == now and NOW or fmt(lh))
    end
    out[3] = fmt(lh + resolve)
    -- An open episode's state outlives its deadline by RESOLVE_AFTER, for whoever resolves it.
    span = math.max(span, 2 * resolve)
  elseif st[3] then
    del[#del + 1] = 'es'
  end
  if w > 0 then
    redis.call('HSET', state_key, unpack(set))
  end
  if #del > 0 then
    redis.call('HDEL', state_key, unpack(del))
  end
  -- Every key lives as long as anything in it can still matter, from the moment it is written.
  local ttl = math.ceil(span * 1000) + 1000
  redis.call('PEXPIRE', recent_key, ttl)
  redis.call('PEXPIRE', buckets_key, ttl)
  redis.call('PEXPIRE', state_key, ttl)
  return out
end

local function resolve_one(state_key, resolve)
  local st = redis.call('HMGET', state_key, 'es', 'ea', 'et', 'fb', 'lh', 'rl', 'ft')
  local es = tonumber(st[1] or '')
  if es == nil then
    return {NOW, '', ''}
  end
  local lh = tonumber(st[5])
  if now < lh + resolve then
    return {NOW, fmt(lh + resolve), ''}
  end
  local del = {'es'}
  local levels = 1
  if st[6] then
    levels = tonumber(string.match(st[6], '^[^|]+|([^|]+)|'))
  end
  for i = 1, levels do
    table.insert(del, 'c' .. i)
  end
  redis.call('HDEL', state_key, unpack(del))
  redis.call('HSET', state_key, 'lr', NOW)
  return {NOW, '', {fmt(es), tonumber(st[2]), tonumber(st[3]), tonumber(st[7]) - tonumber(st[4]), fmt(lh)}}
end

local replies = {}
if ARGV[1] == 'r' then
  for p = 1, #KEYS do
    replies[p] = resolve_one(KEYS[p], tonumber(ARGV[2 + p]))
  end
  return replies
end
local cursor = 3
for p = 1, #KEYS / 3 do
  local n = tonumber(ARGV[cursor])
  local levels = tonumber(ARGV[cursor + 5])
  local th = {}
  for i = 1, levels do
    th[i] = tonumber(ARGV[cursor + 5 + i])
  end
  replies[p] = decide(KEYS[3 * p - 2], KEYS[3 * p - 1], KEYS[3 * p], n, tonumber(ARGV[cursor + 1]),
    tonumber(ARGV[cursor + 2]), tonumber(ARGV[cursor + 3]), ARGV[cursor + 4], th)
  cursor = cursor + 6 + levels
end
return replies
