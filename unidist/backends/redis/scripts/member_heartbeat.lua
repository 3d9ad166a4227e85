-- Record that ARGV[1] is alive for ARGV[3] more µs; drop expired members.
-- KEYS: 1 expiry zset, 2 info hash   ARGV: 1 member, 2 info JSON, 3 ttl µs
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(gone) do redis.call('HDEL', KEYS[2], m) end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
-- The group's keys vanish a while after its last member's heartbeat lapses.
local keep = math.floor(ttl / 1000) + 60000
local left = redis.call('PTTL', KEYS[1])
if left < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('PEXPIRE', KEYS[2], keep)
end
return 1
