-- Delete an in-flight message if ARGV[2] is its current receipt.
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list
-- ARGV: 1 id, 2 receipt.  Returns 1, or 0 (nothing changed).
local meta = redis.call('HGET', KEYS[1], ARGV[1])
if not meta then return 0 end
local receipt = string.match(meta, '^%d+ %d+ %S+ %S+ (%S+) ')
if receipt ~= ARGV[2] or redis.call('ZREM', KEYS[4], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[6], KEYS[7]) end
return 1
