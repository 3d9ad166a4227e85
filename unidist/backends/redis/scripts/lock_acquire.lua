-- Try once to take one of ARGV[1] slots of a lock (FIFO among live waiters).
-- KEYS: 1 holders hash, 2 lease-end zset, 3 waiters zset, 4 waiter-end zset, 5 meta hash,
--       6 generic wake list, 7 this holder's wake list
-- ARGV: 1 limit, 2 holder, 3 info JSON, 4 ttl µs (-1: none), 5 waiting (1/0), 6 waiter ttl µs
-- Returns {1, token, acquired µs, expires µs or -1} or {0, µs until the first lease ends or -1}.
local limit = tonumber(ARGV[1])
local holder = ARGV[2]
local ttl = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, h in ipairs(gone) do redis.call('HDEL', KEYS[1], h) end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
for _, h in ipairs(lapsed) do
  redis.call('ZREM', KEYS[3], h)
  redis.call('DEL', KEYS[6] .. ':' .. h)
end
if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now) end

-- A retried call whose first attempt was granted gets that same grant back.
local rec = redis.call('HGET', KEYS[1], holder)
if rec then
  local tok, acq, exp = string.match(rec, '^(%d+) (%d+) (%-?%d+) ')
  return {1, tok, acq, exp}
end

redis.call('HSET', KEYS[5], 'limit', limit)
local free = limit - redis.call('ZCARD', KEYS[2])
local rank = redis.call('ZRANK', KEYS[3], holder)
local ahead = rank
if not ahead then ahead = redis.call('ZCARD', KEYS[3]) end
if free > ahead then
  -- Fencing token: never below the last one, never below the server clock in µs, so it
  -- keeps increasing even when a restart without persistence lost the stored value.
  local last = tonumber(redis.call('HGET', KEYS[5], 'token') or '0')
  local token = math.max(last + 1, now)
  local tok = string.format('%.0f', token)
  local acq = string.format('%.0f', now)
  local exp = '-1'
  local score = 'inf'
  if ttl >= 0 then
    exp = string.format('%.0f', now + ttl)
    score = exp
  end
  redis.call('HSET', KEYS[5], 'token', tok)
  redis.call('HSET', KEYS[1], holder, tok .. ' ' .. acq .. ' ' .. exp .. ' ' .. ARGV[3])
  redis.call('ZADD', KEYS[2], score, holder)
  if rank then
    redis.call('ZREM', KEYS[3], holder)
    redis.call('ZREM', KEYS[4], holder)
  end
  redis.call('DEL', KEYS[7])
  return {1, tok, acq, exp}
end

if ARGV[5] == '1' then
  if not rank then
    local seq = redis.call('HINCRBY', KEYS[5], 'wseq', 1)
    redis.call('ZADD', KEYS[3], seq, holder)
  end
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[6]), holder)
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local hint = '-1'
if first[2] and first[2] ~= 'inf' then
  hint = string.format('%.0f', tonumber(first[2]) - now)
end
return {0, hint}
