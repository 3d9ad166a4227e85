-- Move every dead message back to ready with attempts reset to 0. Returns the count.
-- KEYS: 1 bodies, 2 meta, 3 ready, 4 delayed, 5 in flight, 6 dead, 7 put sequence, 8 wake list
local ids = redis.call('ZRANGE', KEYS[6], 0, -1)
local moved = 0
for _, id in ipairs(ids) do
  local meta = redis.call('HGET', KEYS[2], id)
  if meta then
    local _, e, n, rank = string.match(meta, '^(%d+) (%d+) (%S+) (%S+) (%S+)$')
    redis.call('HSET', KEYS[2], id, '0 ' .. e .. ' ' .. n .. ' ' .. rank .. ' -')
    redis.call('ZADD', KEYS[3], 0, rank)
    moved = moved + 1
    if moved <= 256 then redis.call('RPUSH', KEYS[8], '1') end
  end
end
redis.call('DEL', KEYS[6])
redis.call('LTRIM', KEYS[8], -256, -1)
return moved
