-- Move every dead message back to ready with attempts reset to 0. Returns the count.
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list
local ids = redis.call('ZRANGE', KEYS[5], 0, -1)
local moved = 0
for _, id in ipairs(ids) do
  local meta = redis.call('HGET', KEYS[1], id)
  if meta then
    local _, e, n, rank, _, pos = string.match(meta, '^(%d+) (%d+) (%S+) (%S+) (%S+) ()')
    redis.call('HSET', KEYS[1], id, '0 ' .. e .. ' ' .. n .. ' ' .. rank .. ' - ' .. string.sub(meta, pos))
    redis.call('ZADD', KEYS[2], 0, rank)
    moved = moved + 1
    if moved <= 256 then redis.call('RPUSH', KEYS[7], '1') end
  end
end
redis.call('DEL', KEYS[5])
redis.call('LTRIM', KEYS[7], -256, -1)
return moved
