-- Announce a lock_wait caller without a registration: releases push onto the generic wake
-- list only while this flag exists. Keeps the longest announced wait.
-- KEYS: 1 generic-waiter flag.  ARGV: 1 how long the caller may wait, ms.
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
