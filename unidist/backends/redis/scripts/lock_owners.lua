-- Live holders of one lock: a flat list holder, record, holder, record, ...
-- ARGV: 1 waiter ttl µs
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
settle()
handoff(tonumber(ARGV[1]))
local out = {}
for _, h in ipairs(redis.call('ZRANGE', E, 0, -1)) do
  local rec = redis.call('HGET', H, h)
  if rec then
    out[#out + 1] = h
    out[#out + 1] = rec
  end
end
return out
