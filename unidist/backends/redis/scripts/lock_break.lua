-- Free every slot of a lock (or only ARGV[2]'s when not empty), then hand the slots to the
-- waiters at the head of the FIFO.
-- ARGV: 1 waiter ttl µs, 2 holder or ''.  Returns how many live slots were freed.
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
local live = redis.call('ZRANGE', E, 0, -1)
if ARGV[2] ~= '' then
  if redis.call('ZSCORE', E, ARGV[2]) then live = {ARGV[2]} else live = {} end
end
for _, h in ipairs(live) do drop(h) end
handoff(tonumber(ARGV[1]))
wake_generic(true)
return #live
