-- Remove ready and delayed messages (and dead ones if ARGV[1] == '1'); in-flight ones stay.
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list
-- Returns how many messages were removed.
local removed = 0
local function drop(id)
  if redis.call('HDEL', KEYS[1], id) == 1 then removed = removed + 1 end
end
for _, rank in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do drop(string.sub(rank, 33)) end
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do drop(id) end
redis.call('DEL', KEYS[2], KEYS[3])
if ARGV[1] == '1' then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do drop(id) end
  redis.call('DEL', KEYS[5])
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[6], KEYS[7]) end
return removed
