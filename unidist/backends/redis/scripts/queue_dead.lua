-- The dead messages, oldest death first: a flat list of id, body, meta, ...
-- KEYS: 1 bodies, 2 meta, 3 ready, 4 delayed, 5 in flight, 6 dead
local ids = redis.call('ZRANGE', KEYS[6], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local meta = redis.call('HGET', KEYS[2], id)
  if meta then
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', KEYS[1], id) or 'null'
    out[#out + 1] = meta
  end
end
return out
