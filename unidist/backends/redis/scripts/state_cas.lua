-- Compare-and-set one key of a bucket.
-- KEYS: 1 bucket hash
-- ARGV: 1 key, 2 expected mode (0 absent or null, 1 the text ARGV[3], 2 absent only),
--       3 expected text, 4 has new (1/0), 5 new text
-- "no new" deletes the key.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local ok
if ARGV[2] == '0' then
  ok = (not cur) or cur == 'null'
elseif ARGV[2] == '2' then
  ok = not cur
else
  ok = cur == ARGV[3]
end
if not ok then return 0 end
if ARGV[4] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
end
return 1
