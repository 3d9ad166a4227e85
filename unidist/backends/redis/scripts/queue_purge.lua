-- Remove ready and delayed messages (and dead ones if ARGV[1] == '1'); in-flight ones stay.
-- KEYS: 1 bodies, 2 meta, 3 ready, 4 delayed, 5 in flight, 6 dead, 7 put sequence, 8 wake list
-- Returns how many messages were removed.
local removed = 0
local function drop(id)
  if redis.call('HDEL', KEYS[2], id) == 1 then removed = removed + 1 end
  redis.call('HDEL', KEYS[1], id)
end
for _, rank in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do drop(string.sub(rank, 33)) end
for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do drop(id) end
redis.call('DEL', KEYS[3], KEYS[4])
if ARGV[1] == '1' then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do drop(id) end
  redis.call('DEL', KEYS[6])
end
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('DEL', KEYS[7], KEYS[8]) end
return removed
