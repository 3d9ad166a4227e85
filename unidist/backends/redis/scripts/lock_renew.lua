-- Extend ARGV[1]'s lease to now + ARGV[2] µs (-1: no expiry).
-- KEYS: 1 holders, 2 lease-end zset
-- Returns {1, expires µs or -1}, or {0} if the holder has no live slot.
local holder = ARGV[1]
local ttl = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local score = redis.call('ZSCORE', KEYS[2], holder)
if not score then return {0} end
if score ~= 'inf' and tonumber(score) <= now then
  redis.call('ZREM', KEYS[2], holder)
  redis.call('HDEL', KEYS[1], holder)
  return {0}
end
local rec = redis.call('HGET', KEYS[1], holder)
if not rec then
  redis.call('ZREM', KEYS[2], holder)
  return {0}
end
local tok, acq, info = string.match(rec, '^(%d+) (%d+) %-?%d+ (.*)$')
local exp = '-1'
local newscore = 'inf'
if ttl >= 0 then
  exp = string.format('%.0f', now + ttl)
  newscore = exp
end
redis.call('ZADD', KEYS[2], 'XX', newscore, holder)
redis.call('HSET', KEYS[1], holder, tok .. ' ' .. acq .. ' ' .. exp .. ' ' .. info)
return {1, exp}
