-- Remove one key of a bucket and return its old text (nil if absent).
-- KEYS: 1 bucket hash   ARGV: 1 key
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then redis.call('HDEL', KEYS[1], ARGV[1]) end
return old
