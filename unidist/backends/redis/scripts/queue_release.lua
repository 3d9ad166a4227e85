-- Give back every in-flight message whose receipt names consumer ARGV[1] ("<receipt>/<id>"):
-- ready again in its old place, or dead once delivered ARGV[2] times, as if its visibility
-- timeout ended now.
-- KEYS: 1 bodies, 2 meta, 3 ready, 4 delayed, 5 in flight, 6 dead, 7 put sequence, 8 wake list
-- ARGV: 1 consumer, 2 max attempts
-- Returns how many messages were given back.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local suffix = '/' .. ARGV[1]
local maxa = tonumber(ARGV[2])
local given = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local meta = redis.call('HGET', KEYS[2], id)
  if meta then
    local a, e, n, rank, receipt = string.match(meta, '^(%d+) (%d+) (%S+) (%S+) (%S+)$')
    if receipt and string.sub(receipt, -#suffix) == suffix then
      redis.call('ZREM', KEYS[5], id)
      redis.call('HSET', KEYS[2], id, a .. ' ' .. e .. ' ' .. n .. ' ' .. rank .. ' -')
      if tonumber(a) >= maxa then
        redis.call('ZADD', KEYS[6], now, id)
      else
        redis.call('ZADD', KEYS[3], 0, rank)
      end
      redis.call('RPUSH', KEYS[8], '1')
      given = given + 1
    end
  end
end
if given > 0 then redis.call('LTRIM', KEYS[8], -256, -1) end
return given
