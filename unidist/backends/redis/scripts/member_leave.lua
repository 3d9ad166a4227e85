-- Remove ARGV[1] from the group. Returns 1 if it was a live member, else 0.
-- KEYS: 1 expiry zset, 2 info hash
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if score and tonumber(score) > now then return 1 end
return 0
