-- The part every lock script shares (keys, clock, lease and waiter upkeep, hand-off).
-- Spliced into every lock script at its include line (see Script.load).
local H, E, W, WE, M, N, WI, P, C, G = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(x) return string.format('%.0f', x) end

local function drop(h)
  redis.call('HDEL', H, h)
  redis.call('ZREM', E, h)
  redis.call('HDEL', P, h)
  redis.call('DEL', N .. ':' .. h, C .. ':' .. h)
end

-- Turn a provisional grant into a normal lease; false if that lease has already ended.
local function finalize(h)
  if redis.call('HEXISTS', P, h) == 0 then return true end
  redis.call('HDEL', P, h)
  redis.call('DEL', N .. ':' .. h, C .. ':' .. h)
  local rec = redis.call('HGET', H, h)
  if not rec then
    redis.call('ZREM', E, h)
    return false
  end
  local exp = tonumber(string.match(rec, '^%d+ %d+ (%-?%d+) '))
  if exp < 0 then
    redis.call('ZADD', E, 'inf', h)
    return true
  end
  if exp <= now then
    drop(h)
    return false
  end
  redis.call('ZADD', E, exp, h)
  return true
end

-- Drop ended leases (keeping claimed provisional grants) and lapsed waiter registrations
-- (none to look for when the lock is quiet). Returns how many leases it dropped.
local function settle(is_quiet)
  local due = redis.call('ZRANGEBYSCORE', E, '-inf', now)
  local dropped = 0
  for _, h in ipairs(due) do
    local keep = false
    if redis.call('HEXISTS', P, h) == 1 and redis.call('EXISTS', C .. ':' .. h) == 1 then
      keep = finalize(h)
    end
    if not keep then
      drop(h)
      dropped = dropped + 1
    end
  end
  if is_quiet then return dropped end
  local lapsed = redis.call('ZRANGEBYSCORE', WE, '-inf', now)
  for _, h in ipairs(lapsed) do
    redis.call('ZREM', W, h)
    redis.call('HDEL', WI, h)
    redis.call('DEL', N .. ':' .. h)
  end
  if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', WE, '-inf', now) end
  return dropped
end

-- Fencing token: never below the last one, never below the server clock in µs, so it keeps
-- increasing even when a restart without persistence lost the stored value. A given limit
-- is stored in the same write.
local function new_token(limit)
  local last = tonumber(redis.call('HGET', M, 'token') or '0')
  local tok = fmt(math.max(last + 1, now))
  if limit then
    redis.call('HSET', M, 'token', tok, 'limit', limit)
  else
    redis.call('HSET', M, 'token', tok)
  end
  return tok
end

-- Give every free slot to the waiter at the head of the FIFO: a provisional grant, pushed
-- onto that waiter's wake list. The token rule is new_token's; the last token handed out is
-- stored once at the end (a release is on the next holder's critical path: every call counts).
local function handoff(wttl)
  local m = redis.call('HMGET', M, 'limit', 'token')
  local free = tonumber(m[1] or '1') - redis.call('ZCARD', E)
  local last = tonumber(m[2] or '0')
  local handed = false
  while free > 0 do
    local head = redis.call('ZPOPMIN', W)
    if #head == 0 then break end
    local h = head[1]
    local reg = redis.call('HGET', WI, h)
    redis.call('ZREM', WE, h)
    if reg then
      redis.call('HDEL', WI, h)
      local ttltxt, info = string.match(reg, '^(%-?%d+) (.*)$')
      local ttl = tonumber(ttltxt)
      last = math.max(last + 1, now)
      handed = true
      local tok = fmt(last)
      local acq = fmt(now)
      local exp = '-1'
      local score = now + wttl
      if ttl >= 0 then
        exp = fmt(now + ttl)
        if now + ttl < score then score = now + ttl end
      end
      redis.call('HSET', H, h, tok .. ' ' .. acq .. ' ' .. exp .. ' ' .. info)
      redis.call('ZADD', E, score, h)
      redis.call('HSET', P, h, ttltxt)
      local k = N .. ':' .. h
      redis.call('DEL', k, C .. ':' .. h)
      redis.call('RPUSH', k, tok .. ' ' .. acq .. ' ' .. exp)
      redis.call('PEXPIRE', k, math.floor(wttl / 1000) + 1000)
      free = free - 1
    end
  end
  if handed then redis.call('HSET', M, 'token', fmt(last)) end
end

-- Wake lock_wait callers without a registration; with force false only if one announced
-- itself (flag G, set by lock_wait_flag for the length of its wait).
local function wake_generic(force)
  if not force and redis.call('EXISTS', G) == 0 then return end
  redis.call('RPUSH', N, '1')
  redis.call('LTRIM', N, -16, -1)
  redis.call('PEXPIRE', N, 5000)
end
-- ---------------------------------------------------------------- end of common part
