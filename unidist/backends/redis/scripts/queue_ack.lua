-- Delete an in-flight message if ARGV[2] is its current receipt.
-- KEYS: 1 bodies, 2 meta, 3 ready, 4 delayed, 5 in flight, 6 dead, 7 put sequence, 8 wake list
-- ARGV: 1 id, 2 receipt.  Returns 1, or 0 (nothing changed).
local meta = redis.call('HGET', KEYS[2], ARGV[1])
if not meta then return 0 end
local receipt = string.match(meta, ' (%S+)$')
if receipt ~= ARGV[2] or redis.call('ZREM', KEYS[5], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('DEL', KEYS[7], KEYS[8]) end
return 1
