-- Try once to take one of ARGV[1] slots of a lock (FIFO among live waiters).
-- ARGV: 1 limit, 2 holder, 3 info JSON, 4 ttl µs (-1: none), 5 waiting (1/0), 6 waiter ttl µs
-- Returns {1, token, acquired µs, expires µs or -1} or {0, µs until the first lease ends or -1}.
-- KEYS: 1 holders hash (holder -> "token acquired_us expires_us info"), 2 lease-end zset,
--       3 waiters zset (FIFO sequence), 4 waiter-end zset, 5 meta hash (token, wseq, limit),
--       6 wake base (generic wake list; waiter h's list is <base>:h),
--       7 waiter registrations (holder -> "ttl_us info"), 8 provisional grants (holder -> ttl_us),
--       9 claim base (waiter h's claim list is <base>:h),
--       10 generic-waiter flag (exists while a lock_wait without a registration waits)
-- A handed-off grant is provisional until its waiter claims it: the waiter's blocked
-- BLMOVE moves the grant from its wake list to its claim list on the server. Unclaimed
-- grants (a waiter that died) lapse after the waiter ttl.
-- @include _lock_common.lua
local limit = tonumber(ARGV[1])
local holder = ARGV[2]
local ttl = tonumber(ARGV[4])
local wttl = tonumber(ARGV[6])
-- A lock nobody holds or waits for (the common case) needs no upkeep at all.
local is_quiet = true
local taken = 0
local busy = redis.call('EXISTS', E, W, WE, WI, P)
if busy > 0 then
  taken = redis.call('ZCARD', E)
  -- Quiet when the lease zset is the only one of them that exists (empty ones do not).
  if taken > 0 then busy = busy - 1 end
  is_quiet = busy == 0
  taken = taken - settle(is_quiet)
end

-- Already holding: a retried call, or a handed-off grant whose wait had timed out.
if taken > 0 then
  local rec = redis.call('HGET', H, holder)
  if rec and (is_quiet or finalize(holder)) then
    local tok, acq, exp = string.match(rec, '^(%d+) (%d+) (%-?%d+) ')
    return {1, tok, acq, exp}
  end
  -- finalize found the handed-off lease ended and dropped it
  if rec and not is_quiet then taken = redis.call('ZCARD', E) end
end

local free = limit - taken
local rank = false
local ahead = 0
if not is_quiet then
  rank = redis.call('ZRANK', W, holder)
  ahead = rank
  if not ahead then ahead = redis.call('ZCARD', W) end
end
if free > ahead then
  local tok = new_token(limit)
  local acq = fmt(now)
  local exp = '-1'
  local score = 'inf'
  if ttl >= 0 then
    exp = fmt(now + ttl)
    score = exp
  end
  redis.call('HSET', H, holder, tok .. ' ' .. acq .. ' ' .. exp .. ' ' .. ARGV[3])
  redis.call('ZADD', E, score, holder)
  if not is_quiet then
    if rank then
      redis.call('ZREM', W, holder)
      redis.call('ZREM', WE, holder)
    end
    redis.call('HDEL', WI, holder)
    redis.call('DEL', N .. ':' .. holder)
  end
  return {1, tok, acq, exp}
end

redis.call('HSET', M, 'limit', limit)
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
