-- Drop ARGV[1]'s waiter registration; if it was at the head, wake the new head(s).
-- KEYS: 1 holders, 2 lease-end zset, 3 waiters, 4 waiter-end zset, 5 meta, 6 generic wake list
-- ARGV: 1 holder
local holder = ARGV[1]
local rank = redis.call('ZRANK', KEYS[3], holder)
redis.call('DEL', KEYS[6] .. ':' .. holder)
if not rank then return 0 end
redis.call('ZREM', KEYS[3], holder)
redis.call('ZREM', KEYS[4], holder)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local live = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%.0f', now), '+inf')
local limit = tonumber(redis.call('HGET', KEYS[5], 'limit') or '1')
local free = limit - live
if free > rank then
  local heads = redis.call('ZRANGE', KEYS[3], 0, free - 1)
  for _, h in ipairs(heads) do
    local k = KEYS[6] .. ':' .. h
    redis.call('RPUSH', k, '1')
    redis.call('PEXPIRE', k, 10000)
  end
end
return 1
