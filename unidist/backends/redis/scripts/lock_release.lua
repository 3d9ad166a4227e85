-- Free the slot of ARGV[1]; wake the waiters at the head of the FIFO.
-- KEYS: 1 holders, 2 lease-end zset, 3 waiters, 4 waiter-end zset, 5 meta, 6 generic wake list
-- ARGV: 1 holder
-- Returns 1 if the holder held a live slot, else 0 (nothing else is touched).
local holder = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local score = redis.call('ZSCORE', KEYS[2], holder)
local held = 0
if score then
  if score == 'inf' or tonumber(score) > now then held = 1 end
  redis.call('ZREM', KEYS[2], holder)
  redis.call('HDEL', KEYS[1], holder)
else
  return 0
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, h in ipairs(gone) do redis.call('HDEL', KEYS[1], h) end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
for _, h in ipairs(lapsed) do
  redis.call('ZREM', KEYS[3], h)
  redis.call('DEL', KEYS[6] .. ':' .. h)
end
if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now) end

-- Wake as many waiters, from the head, as there are free slots now.
local limit = tonumber(redis.call('HGET', KEYS[5], 'limit') or '1')
local free = limit - redis.call('ZCARD', KEYS[2])
if free < 1 then free = 1 end
local heads = redis.call('ZRANGE', KEYS[3], 0, free - 1)
for _, h in ipairs(heads) do
  local k = KEYS[6] .. ':' .. h
  redis.call('RPUSH', k, '1')
  redis.call('PEXPIRE', k, 10000)
end
redis.call('RPUSH', KEYS[6], '1')
redis.call('LTRIM', KEYS[6], -16, -1)
redis.call('PEXPIRE', KEYS[6], 5000)
return held
