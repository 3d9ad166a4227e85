-- Try once to take one of ARGV[1] slots of a lock (FIFO among live waiters).
-- ARGV: 1 limit, 2 holder, 3 info JSON, 4 ttl µs (-1: none), 5 waiting (1/0), 6 waiter ttl µs
-- Returns {1, token, acquired µs, expires µs or -1} or {0, µs until the first lease ends or -1}.
-- KEYS: 1 holders hash (holder -> "token acquired_us expires_us info"), 2 lease-end zset,
--       3 waiters zset (FIFO sequence), 4 waiter-end zset, 5 meta hash (token, wseq, limit),
--       6 wake base (generic wake list; waiter h's list is <base>:h),
--       7 waiter registrations (holder -> "ttl_us info"), 8 provisional grants (holder -> ttl_us),
--       9 claim base (waiter h's claim list is <base>:h)
-- A handed-off grant is provisional until its waiter claims it: the waiter's blocked
-- BLMOVE moves the grant from its wake list to its claim list on the server. Unclaimed
-- grants (a waiter that died) lapse after the waiter ttl.
local H, E, W, WE, M, N, WI, P, C = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
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

-- Drop ended leases (keeping claimed provisional grants) and lapsed waiter registrations.
local function settle()
  local due = redis.call('ZRANGEBYSCORE', E, '-inf', now)
  for _, h in ipairs(due) do
    local keep = false
    if redis.call('HEXISTS', P, h) == 1 and redis.call('EXISTS', C .. ':' .. h) == 1 then
      keep = finalize(h)
    end
    if not keep then drop(h) end
  end
  local lapsed = redis.call('ZRANGEBYSCORE', WE, '-inf', now)
  for _, h in ipairs(lapsed) do
    redis.call('ZREM', W, h)
    redis.call('HDEL', WI, h)
    redis.call('DEL', N .. ':' .. h)
  end
  if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', WE, '-inf', now) end
end

-- Fencing token: never below the last one, never below the server clock in µs, so it keeps
-- increasing even when a restart without persistence lost the stored value.
local function new_token()
  local last = tonumber(redis.call('HGET', M, 'token') or '0')
  local tok = fmt(math.max(last + 1, now))
  redis.call('HSET', M, 'token', tok)
  return tok
end

-- Give every free slot to the waiter at the head of the FIFO: a provisional grant, pushed
-- onto that waiter's wake list.
local function handoff(wttl)
  local limit = tonumber(redis.call('HGET', M, 'limit') or '1')
  local free = limit - redis.call('ZCARD', E)
  while free > 0 do
    local head = redis.call('ZRANGE', W, 0, 0)
    if #head == 0 then break end
    local h = head[1]
    local reg = redis.call('HGET', WI, h)
    redis.call('ZREM', W, h)
    redis.call('ZREM', WE, h)
    redis.call('HDEL', WI, h)
    if reg then
      local ttltxt, info = string.match(reg, '^(%-?%d+) (.*)$')
      local ttl = tonumber(ttltxt)
      local tok = new_token()
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
end

local function wake_generic()
  redis.call('RPUSH', N, '1')
  redis.call('LTRIM', N, -16, -1)
  redis.call('PEXPIRE', N, 5000)
end
-- ---------------------------------------------------------------- end of common part
local limit = tonumber(ARGV[1])
local holder = ARGV[2]
local ttl = tonumber(ARGV[4])
local wttl = tonumber(ARGV[6])
settle()

-- Already holding: a retried call, or a handed-off grant whose wait had timed out.
if redis.call('HEXISTS', H, holder) == 1 and finalize(holder) then
  local rec = redis.call('HGET', H, holder)
  local tok, acq, exp = string.match(rec, '^(%d+) (%d+) (%-?%d+) ')
  return {1, tok, acq, exp}
end

redis.call('HSET', M, 'limit', limit)
local free = limit - redis.call('ZCARD', E)
local rank = redis.call('ZRANK', W, holder)
local ahead = rank
if not ahead then ahead = redis.call('ZCARD', W) end
if free > ahead then
  local tok = new_token()
  local acq = fmt(now)
  local exp = '-1'
  local score = 'inf'
  if ttl >= 0 then
    exp = fmt(now + ttl)
    score = exp
  end
  redis.call('HSET', H, holder, tok .. ' ' .. acq .. ' ' .. exp .. ' ' .. ARGV[3])
  redis.call('ZADD', E, score, holder)
  if rank then
    redis.call('ZREM', W, holder)
    redis.call('ZREM', WE, holder)
  end
  redis.call('HDEL', WI, holder)
  redis.call('DEL', N .. ':' .. holder)
  return {1, tok, acq, exp}
end

if ARGV[5] == '1' then
  if not rank then
    local seq = redis.call('HINCRBY', M, 'wseq', 1)
    redis.call('ZADD', W, seq, holder)
  end
  redis.call('ZADD', WE, now + wttl, holder)
  redis.call('HSET', WI, holder, ARGV[4] .. ' ' .. ARGV[3])
end
-- Free slots that the caller may not take belong to the waiters ahead of it.
if free > 0 then handoff(wttl) end
local first = redis.call('ZRANGE', E, 0, 0, 'WITHSCORES')
local hint = '-1'
if first[2] and first[2] ~= 'inf' then hint = fmt(tonumber(first[2]) - now) end
return {0, hint}
