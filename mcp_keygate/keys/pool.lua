-- The shared key pool's decisions, run inside Redis: one script call is one lease, one release,
-- one cancel, one reset or one "how long until a key is ready" — atomic, one round trip, and never
-- retried because some other key changed.
--
-- keys/rules.py is the specification; this is the same set of rules written once more, and
-- tests/test_pool_equivalence.py runs the same scenarios through both and demands identical
-- outcomes. keys/index.py (with LocalKeyPool.acquire) is the specification of the index: which keys
-- a pick looks at, in which order, and when a held key is parked until its hold ends.
--
-- Every key this script touches carries the provider's hash tag ({provider}), so a call stays in
-- one Redis Cluster slot. Numbers are written with 17 significant digits (cjson keeps only 14),
-- so a float read back in Python is the float written here.
--
-- KEYS: 1 keys (zset key id -> index)   2 models (set: models with an index)
--       3 leases (zset lease id -> expiry)   4 tickets (hash lease id -> [key id, probe, model])
--       5 inflight (hash key id US model -> n)   6 probing (set of key id US model)
--       7 cursor (round-robin)   8 seq (hash model -> last position handed out)
--       9 ready:<model> (zset, order of preference)   10 parked:<model> (zset, score = until)
-- ARGV: 1 op, 2 base name, 3 now, 4 provider, then the op's own arguments.

local op, base, now_text, provider = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(now_text)
local K_KEYS, K_MODELS, K_LEASES, K_TICKETS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_INFLIGHT, K_PROBING, K_CURSOR, K_SEQ = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local INF = math.huge
local NULL = cjson.null
local SEP = '\31'
local USABLE, PROBE, BUSY, HELD = 'usable', 'probe', 'busy', 'held'
-- Same values as keys/index.py and keys/rules.py.
local USABLE_PER_PICK, MAX_SCAN, NEARLY_OUT, BATCH, REAP = 8, 1000, 0.1, 16, 32
local HEADERS_SAY_NONE_LEFT = "no requests left in this rate-limit window (from the provider's headers)"

-- -- records in and out ---------------------------------------------------------------------

local function opt(v)
  if v == NULL then return nil end
  return v
end

local function num_arg(text)
  if text == nil or text == '' then return nil end
  return tonumber(text)
end

local function hold_in(d)
  if d == nil or d == NULL then return nil end
  return {state = d.state, till = opt(d['until']), reason = opt(d.reason) or '', status_code = opt(d.status_code),
          since = opt(d.since) or 0, strikes = opt(d.strikes) or 1}
end

local function window_in(d)
  return {limit = opt(d.limit), remaining = opt(d.remaining), reset_at = opt(d.reset_at), silent = d.silent == true}
end

local function budget_in(d)
  local b = {}
  if d ~= nil and d ~= NULL then
    for _, name in ipairs({'rpm', 'tpm', 'rpd', 'tpd'}) do b[name] = opt(d[name]) end
  end
  return b
end

local function record_in(raw, key_id)
  if not raw then
    return {key_id = key_id, provider = provider, mask = '', model_holds = {}, windows = {}, requests = 0,
            failures = 0, spend = {}, budget = {}}
  end
  local d = cjson.decode(raw)
  local r = {key_id = d.key_id, provider = d.provider, mask = d.mask, hold = hold_in(d.hold), model_holds = {},
             windows = {}, requests = opt(d.requests) or 0, failures = opt(d.failures) or 0,
             last_status = opt(d.last_status), last_used = opt(d.last_used), spend = {}, budget = budget_in(d.budget)}
  if d.model_holds ~= nil and d.model_holds ~= NULL then
    for m, h in pairs(d.model_holds) do r.model_holds[m] = hold_in(h) end
  end
  if d.windows ~= nil and d.windows ~= NULL then
    for m, w in pairs(d.windows) do r.windows[m] = window_in(w) end
  end
  if d.spend ~= nil and d.spend ~= NULL then
    for w, buckets in pairs(d.spend) do
      local list = {}
      for i, b in ipairs(buckets) do list[i] = {b[1], b[2], b[3]} end
      r.spend[w] = list
    end
  end
  return r
end

local function n(x)
  if x == nil then return 'null' end
  return string.format('%.17g', x)
end

local function s(x)
  if x == nil then return 'null' end
  return cjson.encode(x)
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

local function hold_out(h)
  if h == nil then return 'null' end
  return '{"state":' .. s(h.state) .. ',"until":' .. n(h.till) .. ',"reason":' .. s(h.reason) ..
    ',"status_code":' .. n(h.status_code) .. ',"since":' .. n(h.since) .. ',"strikes":' .. n(h.strikes) .. '}'
end

local function map_out(t, each)
  local parts = {}
  for _, k in ipairs(sorted_keys(t)) do parts[#parts + 1] = s(k) .. ':' .. each(t[k]) end
  return '{' .. table.concat(parts, ',') .. '}'
end

local function window_out(w)
  return '{"limit":' .. n(w.limit) .. ',"remaining":' .. n(w.remaining) .. ',"reset_at":' .. n(w.reset_at) ..
    ',"silent":' .. (w.silent and 'true' or 'false') .. '}'
end

local function buckets_out(list)
  local parts = {}
  for i, b in ipairs(list) do parts[i] = '[' .. n(b[1]) .. ',' .. n(b[2]) .. ',' .. n(b[3]) .. ']' end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function record_out(r)
  return '{"key_id":' .. s(r.key_id) .. ',"provider":' .. s(r.provider) .. ',"mask":' .. s(r.mask) ..
    ',"hold":' .. hold_out(r.hold) .. ',"model_holds":' .. map_out(r.model_holds, hold_out) ..
    ',"windows":' .. map_out(r.windows, window_out) .. ',"requests":' .. n(r.requests) ..
    ',"failures":' .. n(r.failures) .. ',"last_status":' .. n(r.last_status) .. ',"last_used":' .. n(r.last_used) ..
    ',"spend":' .. map_out(r.spend, buckets_out) .. ',"budget":' .. map_out(r.budget, n) .. '}'
end

local function record_key(key_id) return base .. ':key:' .. key_id end
local function load(key_id) return record_in(redis.call('GET', record_key(key_id)), key_id) end
local function save(r) redis.call('SET', record_key(r.key_id), record_out(r)) end

-- -- budgets (keys/budget.py) ---------------------------------------------------------------

local function has_budget(b) return b.rpm ~= nil or b.tpm ~= nil or b.rpd ~= nil or b.tpd ~= nil end

local function limits(b)
  local out = {}
  if b.rpm ~= nil or b.tpm ~= nil then out[#out + 1] = {'minute', 60.0, b.rpm or INF, b.tpm or INF} end
  if b.rpd ~= nil or b.tpd ~= nil then out[#out + 1] = {'day', 86400.0, b.rpd or INF, b.tpd or INF} end
  return out
end

local function wait_for_budget(spend, b, tokens)
  local longest = 0.0
  for _, l in ipairs(limits(b)) do
    local window, window_s, max_requests, max_tokens = l[1], l[2], l[3], l[4]
    if tokens > max_tokens then return INF end
    local width = window_s / 60
    local buckets = {}
    for _, bucket in ipairs(spend[window] or {}) do
      if bucket[1] + width > now - window_s then buckets[#buckets + 1] = bucket end
    end
    local requests, used = 0, 0
    for _, bucket in ipairs(buckets) do requests = requests + bucket[2] end
    for _, bucket in ipairs(buckets) do used = used + bucket[3] end
    if not (requests + 1 <= max_requests and used + tokens <= max_tokens) then
      local wait = INF
      for _, bucket in ipairs(buckets) do
        requests = requests - bucket[2]
        used = used - bucket[3]
        if requests + 1 <= max_requests and used + tokens <= max_tokens then
          wait = bucket[1] + width + window_s - now
          break
        end
      end
      if wait > longest then longest = wait end
    end
  end
  return longest
end

local function charge(spend, b, requests, tokens)
  for _, l in ipairs(limits(b)) do
    local window, window_s = l[1], l[2]
    local width = window_s / 60
    local start = math.floor(now / width) * width
    local buckets = {}
    for _, bucket in ipairs(spend[window] or {}) do
      if bucket[1] + width > now - window_s then buckets[#buckets + 1] = bucket end
    end
    local last = buckets[#buckets]
    if last ~= nil and last[1] == start then
      last[2] = last[2] + requests
    elseif requests ~= 0 or tokens > 0 then
      buckets[#buckets + 1] = {start, requests, 0.0}
    end
    if tokens > 0 then buckets[#buckets][3] = buckets[#buckets][3] + tokens end
    local refund = -tokens
    for i = #buckets, 1, -1 do
      if refund <= 0 then break end
      local taken = math.min(refund, buckets[i][3])
      buckets[i][3] = buckets[i][3] - taken
      refund = refund - taken
    end
    spend[window] = buckets
  end
end

-- -- rules (keys/rules.py, keys/state.py) ---------------------------------------------------

local function active(h) return h.till == nil or h.till > now end

local function hold_for(r, model)
  if r.hold ~= nil and active(r.hold) then return r.hold end
  local held = r.model_holds[model]
  if held ~= nil and active(held) then return held end
  return nil
end

local function expired_hold_for(r, model)
  for _, held in ipairs({r.hold or false, r.model_holds[model] or false}) do
    if held and not active(held) then return held end
  end
  return nil
end

local function remaining_at(w)
  if w.reset_at ~= nil and now >= w.reset_at then return w.limit end
  return w.remaining
end

local function fit_for(r, model, in_flight, probing, cost)
  if hold_for(r, model) ~= nil then return HELD end
  if has_budget(r.budget) and wait_for_budget(r.spend, r.budget, cost) > 0 then return HELD end
  if expired_hold_for(r, model) ~= nil then
    if probing or in_flight ~= 0 then return BUSY end
    return PROBE
  end
  local w = r.windows[model]
  if w == nil then
    if in_flight ~= 0 then return BUSY end
    return USABLE
  end
  if w.silent then return USABLE end
  local remaining = remaining_at(w)
  if remaining == nil then
    if in_flight ~= 0 then return BUSY end
    return USABLE
  end
  if in_flight < remaining then return USABLE end
  return BUSY
end

local function nearly_out(r, model)
  local w = r.windows[model]
  if w == nil or w.silent or w.limit == nil or w.limit == 0 then return false end
  local remaining = remaining_at(w)
  return remaining ~= nil and remaining < NEARLY_OUT * w.limit
end

local function wait_for(r, model, cost)
  local wait = 0.0
  if has_budget(r.budget) then wait = wait_for_budget(r.spend, r.budget, cost) end
  for _, held in ipairs({r.hold or false, r.model_holds[model] or false}) do
    if held and active(held) then
      local left = INF
      if held.till ~= nil then left = held.till - now end
      if left > wait then wait = left end
    end
  end
  return wait
end

local function before(a, b, strategy, cursor, count)
  if strategy == 'priority' then return a.index < b.index end
  if strategy == 'round_robin' then return (a.index - cursor) % count < (b.index - cursor) % count end
  if a.nearly_out ~= b.nearly_out then return b.nearly_out end
  if a.in_flight ~= b.in_flight then return a.in_flight < b.in_flight end
  if a.last_used ~= b.last_used then return a.last_used < b.last_used end
  return a.index < b.index
end

local function choose(strategy, candidates, cursor, count)
  local best = nil
  for _, c in ipairs(candidates) do
    if c.fit == USABLE or c.fit == PROBE then
      if best == nil or before(c, best, strategy, cursor, count) then best = c end
    end
  end
  return best
end

local function learn_headroom(r, model, h)
  if h == nil or h.remaining == nil then
    if r.windows[model] == nil then r.windows[model] = {silent = true} end
    return
  end
  local reset_at = nil
  if h.reset_s ~= nil then reset_at = now + h.reset_s end
  local old = r.windows[model]
  local remaining = h.remaining
  local same = old ~= nil and not old.silent and old.reset_at ~= nil and reset_at ~= nil and now < old.reset_at
    and reset_at <= old.reset_at + 1.0
  if same and old.remaining ~= nil then
    remaining = math.min(remaining, old.remaining)
    reset_at = old.reset_at
  end
  r.windows[model] = {limit = h.limit, remaining = remaining, reset_at = reset_at, silent = false}
end

local function clear_expired(r, model)
  if r.hold ~= nil and not active(r.hold) then r.hold = nil end
  local held = r.model_holds[model]
  if held ~= nil and not active(held) then r.model_holds[model] = nil end
  for _, other in ipairs(sorted_keys(r.model_holds)) do
    held = r.model_holds[other]
    if not active(held) and held.till ~= nil and now - held.till > 3600 then r.model_holds[other] = nil end
  end
end

local function new_hold(state, till, reason, status, strikes)
  return {state = state, till = till, reason = reason, status_code = status, since = now, strikes = strikes or 1}
end

local function apply_verdict(r, model, v, h, probe)
  r.requests = r.requests + 1
  r.last_used = now
  r.last_status = v.status
  if v.outcome ~= 'timeout' and v.status ~= nil then learn_headroom(r, model, h) end
  if v.outcome == 'ok' then
    clear_expired(r, model)
    local w = r.windows[model]
    if w ~= nil and w.remaining == 0 and w.reset_at ~= nil and w.reset_at > now then
      r.model_holds[model] = new_hold('cooling', w.reset_at, HEADERS_SAY_NONE_LEFT, v.status)
    end
    return
  end
  r.failures = r.failures + 1
  if v.outcome == 'rate_limited' then
    local previous = nil
    if probe then previous = expired_hold_for(r, model) end
    local strikes = 1
    if previous ~= nil then strikes = previous.strikes + 1 end
    local wait = v.retry_after
    if wait == nil or wait <= 0 then wait = v.cooldown * 2 ^ (strikes - 1) end
    if wait >= v.long_wait then
      r.hold = new_hold('exhausted', now + wait, v.reason, v.status)
      return
    end
    wait = math.min(wait, v.max_cooldown)
    r.model_holds[model] = new_hold('cooling', now + wait, v.reason, v.status, strikes)
  elseif v.outcome == 'quota_exhausted' then
    local wait = v.quota_cooldown
    if v.retry_after ~= nil and v.retry_after ~= 0 then wait = v.retry_after end
    r.hold = new_hold('exhausted', now + wait, v.reason, v.status)
  elseif v.outcome == 'auth_failed' then
    r.hold = new_hold('disabled', nil, v.reason, v.status)
  end
end

-- -- the index (keys/index.py) and leases ---------------------------------------------------

local function ready_key(model) return base .. ':ready:' .. model end
local function parked_key(model) return base .. ':parked:' .. model end

local function index_of(model)
  -- First use of (provider, model): every key, in configuration order.
  if redis.call('SADD', K_MODELS, model) == 1 then
    redis.call('ZUNIONSTORE', ready_key(model), 1, K_KEYS)
    redis.call('HSET', K_SEQ, model, redis.call('ZCARD', K_KEYS))
  end
end

local function to_ready(model, key_id, strategy)
  local score
  if strategy == 'priority' then
    score = redis.call('ZSCORE', K_KEYS, key_id)
  else
    score = redis.call('HINCRBY', K_SEQ, model, 1)
  end
  redis.call('ZADD', ready_key(model), score, key_id)
end

local function wake(model, strategy)
  local due = redis.call('ZRANGEBYSCORE', parked_key(model), '-inf', now_text)
  for _, key_id in ipairs(due) do
    redis.call('ZREM', parked_key(model), key_id)
    to_ready(model, key_id, strategy)
  end
end

local function park(model, key_id, till)
  redis.call('ZREM', ready_key(model), key_id)
  local score = '+inf'
  if till ~= INF then score = n(till) end
  redis.call('ZADD', parked_key(model), score, key_id)
end

-- Ready keys in order of preference; visit(key_id) returns true to stop. True when MAX_SCAN keys
-- were looked at without visit saying stop (the pick was cut short).
local function scan(model, visit)
  local offset, seen = 0, 0
  while true do
    local batch = redis.call('ZRANGE', ready_key(model), offset, offset + BATCH - 1)
    if #batch == 0 then return false end
    for _, key_id in ipairs(batch) do
      seen = seen + 1
      if visit(key_id) then return false end
      if seen >= MAX_SCAN then return true end
    end
    offset = offset + #batch
  end
end

local function end_lease(lease_id)
  redis.call('ZREM', K_LEASES, lease_id)
  local raw = redis.call('HGET', K_TICKETS, lease_id)
  if not raw then return nil end
  redis.call('HDEL', K_TICKETS, lease_id)
  local t = cjson.decode(raw)
  local slot = t[1] .. SEP .. t[3]
  if redis.call('HINCRBY', K_INFLIGHT, slot, -1) <= 0 then redis.call('HDEL', K_INFLIGHT, slot) end
  redis.call('SREM', K_PROBING, slot)
  return t
end

local function reap()
  -- Leases of instances that crashed (or lost their Redis) expire; a few are cleared per call.
  for _, lease_id in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', '(' .. now_text, 'LIMIT', 0, REAP)) do
    end_lease(lease_id)
  end
end

-- -- operations ------------------------------------------------------------------------------

local function acquire()
  local model, cost, strategy, count = ARGV[5], tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
  local lease_id, expiry = ARGV[9], ARGV[10]
  local skip = {}
  for i = 11, #ARGV do skip[ARGV[i]] = true end
  if redis.call('EXISTS', K_KEYS) == 0 then return {'closed'} end
  reap()
  index_of(model)
  wake(model, strategy)
  local candidates, held, records, usable, busy = {}, {}, {}, 0, false
  local cut = scan(model, function(key_id)
    if skip[key_id] then return false end
    local r = load(key_id)
    records[key_id] = r
    local slot = key_id .. SEP .. model
    local in_flight = tonumber(redis.call('HGET', K_INFLIGHT, slot) or 0)
    local probing = redis.call('SISMEMBER', K_PROBING, slot) == 1
    local fit = fit_for(r, model, in_flight, probing, cost)
    if fit == HELD then
      held[#held + 1] = key_id
      return false
    end
    candidates[#candidates + 1] = {key_id = key_id, index = tonumber(redis.call('ZSCORE', K_KEYS, key_id)),
      in_flight = in_flight, last_used = r.last_used or 0, fit = fit, nearly_out = nearly_out(r, model)}
    if fit == BUSY then
      busy = true
    else
      usable = usable + 1
      if usable >= USABLE_PER_PICK then return true end
    end
    return false
  end)
  for _, key_id in ipairs(held) do
    local wait = wait_for(records[key_id], model, 0)
    if wait > 0 then park(model, key_id, now + wait) end
  end
  local chosen = choose(strategy, candidates, tonumber(redis.call('GET', K_CURSOR) or 0), count)
  if chosen == nil then
    if busy or cut then return {'busy'} end
    return {'held'}
  end
  if strategy ~= 'priority' then to_ready(model, chosen.key_id, strategy) end
  redis.call('SET', K_CURSOR, (chosen.index + 1) % count)
  local probe = chosen.fit == PROBE
  local slot = chosen.key_id .. SEP .. model
  redis.call('HINCRBY', K_INFLIGHT, slot, 1)
  if probe then redis.call('SADD', K_PROBING, slot) end
  redis.call('ZADD', K_LEASES, expiry, lease_id)
  redis.call('HSET', K_TICKETS, lease_id, cjson.encode({chosen.key_id, probe and 1 or 0, model}))
  local r = records[chosen.key_id]
  if has_budget(r.budget) then
    charge(r.spend, r.budget, 1, cost)
    save(r)
  end
  return {'lease', chosen.key_id, probe and 1 or 0}
end

local function release()
  local lease_id = ARGV[5]
  local v = {outcome = ARGV[6], status = num_arg(ARGV[7]), retry_after = num_arg(ARGV[8]), reason = ARGV[9],
             cooldown = tonumber(ARGV[14]), max_cooldown = tonumber(ARGV[15]), quota_cooldown = tonumber(ARGV[16]),
             long_wait = tonumber(ARGV[17])}
  local h = nil
  if ARGV[10] == '1' then h = {limit = num_arg(ARGV[11]), remaining = num_arg(ARGV[12]), reset_s = num_arg(ARGV[13])} end
  local cost, used = tonumber(ARGV[18]), num_arg(ARGV[19])
  reap()
  local t = end_lease(lease_id)
  if t == nil then return 0 end -- released already, or expired: nothing to learn twice
  local r = load(t[1])
  apply_verdict(r, t[3], v, h, t[2] == 1)
  if (r.budget.tpm ~= nil or r.budget.tpd ~= nil) and used ~= nil and used ~= cost then
    charge(r.spend, r.budget, 0, used - cost)
  end
  save(r)
  return 1
end

local function cancel()
  reap()
  if end_lease(ARGV[5]) == nil then return 0 end
  return 1
end

local function reset()
  local key_id, strategy = ARGV[5], ARGV[6]
  if not redis.call('ZSCORE', K_KEYS, key_id) then return 0 end
  local r = load(key_id)
  r.hold = nil
  r.model_holds = {}
  r.windows = {}
  save(r)
  for _, model in ipairs(redis.call('SMEMBERS', K_MODELS)) do
    if redis.call('ZREM', parked_key(model), key_id) == 1 then to_ready(model, key_id, strategy) end
  end
  return 1
end

local function ready_in()
  local model, strategy = ARGV[5], ARGV[6]
  if redis.call('EXISTS', K_KEYS) == 0 then return 'closed' end
  index_of(model)
  wake(model, strategy)
  local held, found = {}, false
  local cut = scan(model, function(key_id)
    local wait = wait_for(load(key_id), model, 0)
    if wait == 0 then
      found = true
      return true
    end
    held[#held + 1] = {key_id, wait}
    return false
  end)
  for _, h in ipairs(held) do park(model, h[1], now + h[2]) end
  if found or cut then return '0' end
  local first = redis.call('ZRANGE', parked_key(model), 0, 0, 'WITHSCORES')
  if #first == 0 or first[2] == 'inf' or first[2] == '+inf' then return 'none' end
  return n(tonumber(first[2]) - now)
end

-- Make the key list match the configuration (a chunk at a time): ARGV 5.. = key id, index, fresh
-- record JSON, repeated. A stored record keeps its state; only its budget follows the configuration.
local function add_keys()
  for i = 5, #ARGV, 3 do
    local key_id, fresh = ARGV[i], ARGV[i + 2]
    redis.call('ZADD', K_KEYS, ARGV[i + 1], key_id)
    local raw = redis.call('GET', record_key(key_id))
    if not raw then
      redis.call('SET', record_key(key_id), fresh)
    else
      local r = record_in(raw, key_id)
      r.budget = budget_in(cjson.decode(fresh).budget)
      save(r)
    end
  end
  return 1
end

-- A new key list: forget the indexes built on the old one (they are rebuilt on first use).
local function drop_indexes()
  for _, model in ipairs(redis.call('SMEMBERS', K_MODELS)) do
    redis.call('DEL', ready_key(model), parked_key(model))
  end
  redis.call('DEL', K_MODELS, K_SEQ, K_KEYS)
  return 1
end

local ops = {acquire = acquire, release = release, cancel = cancel, reset = reset, ready_in = ready_in,
             add_keys = add_keys, drop_indexes = drop_indexes}
return ops[op]()
