-- Free every slot of a lock; wake every waiter. Returns how many live slots were freed.
-- KEYS: 1 holders, 2 lease-end zset, 3 waiters, 4 waiter-end zset, 5 meta, 6 generic wake list
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local live = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%.0f', now), '+inf')
redis.call('DEL', KEYS[1], KEYS[2])
local waiters = redis.call('ZRANGE', KEYS[3], 0, -1)
for _, h in ipairs(waiters) do
  local k = KEYS[6] .. ':' .. h
  redis.call('RPUSH', k, '1')
  redis.call('PEXPIRE', k, 10000)
end
redis.call('RPUSH', KEYS[6], '1')
redis.call('LTRIM', KEYS[6], -16, -1)
redis.call('PEXPIRE', KEYS[6], 5000)
return live
