-- Give back every in-flight message whose receipt names consumer ARGV[1] ("<receipt>/<id>"):
-- ready again in its old place, or dead once delivered ARGV[2] times, as if its visibility
-- timeout ended now.
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list
-- ARGV: 1 consumer, 2 max attempts
-- Returns how many messages were given back.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local suffix = '/' .. ARGV[1]
local maxa = tonumber(ARGV[2])
local given = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  local meta = redis.call('HGET', KEYS[1], id)
  if meta then
    local a, e, n, rank, receipt, pos = string.match(meta, '^(%d+) (%d+) (%S+) (%S+) (%S+) ()')
    if receipt and string.sub(receipt, -#suffix) == suffix then
      redis.call('ZREM', KEYS[4], id)
      redis.call('HSET', KEYS[1], id, a .. ' ' .. e .. ' ' .. n .. ' ' .. rank .. ' - ' .. string.sub(meta, pos))
      if tonumber(a) >= maxa then
        redis.call('ZADD', KEYS[5], now, id)
      else
        redis.call('ZADD', KEYS[2], 0, rank)
      end
      redis.call('RPUSH', KEYS[7], '1')
      given = given + 1
    end
  end
end
if given > 0 then redis.call('LTRIM', KEYS[7], -256, -1) end
return given
