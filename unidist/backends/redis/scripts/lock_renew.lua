-- Extend ARGV[1]'s lease to now + ARGV[2] µs (-1: no expiry).
-- ARGV: 1 holder, 2 ttl µs, 3 waiter ttl µs
-- Returns {1, expires µs or -1}, or {0} if the holder has no live slot.
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
local holder = ARGV[1]
local ttl = tonumber(ARGV[2])
if not finalize(holder) then return {0} end
settle()
local rec = redis.call('HGET', H, holder)
if not rec or not redis.call('ZSCORE', E, holder) then return {0} end
local tok, acq, info = string.match(rec, '^(%d+) (%d+) %-?%d+ (.*)$')
local exp = '-1'
local newscore = 'inf'
if ttl >= 0 then
  exp = fmt(now + ttl)
  newscore = exp
end
redis.call('ZADD', E, 'XX', newscore, holder)
redis.call('HSET', H, holder, tok .. ' ' .. acq .. ' ' .. exp .. ' ' .. info)
return {1, exp}
