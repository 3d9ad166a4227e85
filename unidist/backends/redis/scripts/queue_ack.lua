-- Delete an in-flight message if ARGV[2] is its current receipt.
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list
-- ARGV: 1 id, 2 receipt.  Returns 1, or 0 (nothing changed).
-- Three commands (HGET, ZREM, HDEL): the bookkeeping keys of a queue left empty are deleted
-- by the next take that finds nothing ready (see queue_take.lua).
local meta = redis.call('HGET', KEYS[1], ARGV[1])
if not meta then return 0 end
-- The receipt is the record's fifth field (the fields before it hold no spaces).
local find = string.find
local p4 = find(meta, ' ', find(meta, ' ', find(meta, ' ', find(meta, ' ', 1, true) + 1, true) + 1, true) + 1, true)
local p5 = find(meta, ' ', p4 + 1, true)
if string.sub(meta, p4 + 1, p5 - 1) ~= ARGV[2] or redis.call('ZREM', KEYS[4], ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
