-- Give an in-flight message back if ARGV[2] is its current receipt: ready after ARGV[3] µs,
-- or dead once delivered ARGV[4] times.
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list
-- Returns 1, or 0 (nothing changed).
local meta = redis.call('HGET', KEYS[1], ARGV[1])
if not meta then return 0 end
local a, e, n, rank, receipt, pos = string.match(meta, '^(%d+) (%d+) (%S+) (%S+) (%S+) ()')
if receipt ~= ARGV[2] or not redis.call('ZSCORE', KEYS[4], ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local delay = tonumber(ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], a .. ' ' .. e .. ' ' .. n .. ' ' .. rank .. ' - ' .. string.sub(meta, pos))
if tonumber(a) >= tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[5], now, ARGV[1])
elseif delay > 0 then
  redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
else
  redis.call('ZADD', KEYS[2], 0, rank)
end
redis.call('RPUSH', KEYS[7], '1')
redis.call('LTRIM', KEYS[7], -256, -1)
return 1
