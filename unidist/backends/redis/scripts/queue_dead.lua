-- The dead messages, oldest death first: a flat list of id, body, meta, ...
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead
local ids = redis.call('ZRANGE', KEYS[5], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local record = redis.call('HGET', KEYS[1], id)
  if record then
    local meta, pos = string.match(record, '^(%d+ %d+ %S+ %S+ %S+) ()')
    out[#out + 1] = id
    if meta then
      out[#out + 1] = string.sub(record, pos)
      out[#out + 1] = meta
    else
      out[#out + 1] = 'null'
      out[#out + 1] = record
    end
  end
end
return out
