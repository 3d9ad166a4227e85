-- Give an in-flight message back if ARGV[2] is its current receipt: ready after ARGV[3] µs,
-- or dead once delivered ARGV[4] times.
-- KEYS: 1 bodies, 2 meta, 3 ready, 4 delayed, 5 in flight, 6 dead, 7 put sequence, 8 wake list
-- Returns 1, or 0 (nothing changed).
local meta = redis.call('HGET', KEYS[2], ARGV[1])
if not meta then return 0 end
local a, e, n, rank, receipt = string.match(meta, '^(%d+) (%d+) (%S+) (%S+) (%S+)$')
if receipt ~= ARGV[2] or not redis.call('ZSCORE', KEYS[5], ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local delay = tonumber(ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], a .. ' ' .. e .. ' ' .. n .. ' ' .. rank .. ' -')
if tonumber(a) >= tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[6], now, ARGV[1])
elseif delay > 0 then
  redis.call('ZADD', KEYS[4], now + delay, ARGV[1])
else
  redis.call('ZADD', KEYS[3], 0, rank)
end
redis.call('RPUSH', KEYS[8], '1')
redis.call('LTRIM', KEYS[8], -256, -1)
return 1
