-- Free the slot of ARGV[1] and hand free slots to the waiters at the head of the FIFO.
-- ARGV: 1 holder, 2 waiter ttl µs
-- Returns 1 if the holder held a live slot, else 0 (another holder is never touched).
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
local score = redis.call('ZSCORE', E, holder)
if not score then return 0 end
local held = 0
if redis.call('EXISTS', W, WE, WI, P, G) == 0 then
  -- No waiter to hand the slot to, no provisional grant and no lock_wait caller without a
  -- registration: just free the slot. Ended leases of others wait for the next acquire's
  -- settle: nobody waits for them.
  if score == 'inf' or tonumber(score) > now then held = 1 end
  redis.call('HDEL', H, holder)
  redis.call('ZREM', E, holder)
  return held
end
if redis.call('HEXISTS', P, holder) == 1 then
  -- A handed-off grant: its lease score is the claim deadline, the lease end is in the record.
  local rec = redis.call('HGET', H, holder)
  if rec then
    local exp = tonumber(string.match(rec, '^%d+ %d+ (%-?%d+) '))
    if exp < 0 or exp > now then held = 1 end
  end
elseif score == 'inf' or tonumber(score) > now then
  held = 1
end
drop(holder)
settle()
handoff(tonumber(ARGV[2]))
wake_generic(false)
return held
