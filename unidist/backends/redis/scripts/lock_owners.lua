-- Live holders of one lock.
-- KEYS: 1 holders, 2 lease-end zset
-- Returns a flat list: holder, record, holder, record, ...
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. string.format('%.0f', now), '+inf')
local out = {}
for _, h in ipairs(live) do
  local rec = redis.call('HGET', KEYS[1], h)
  if rec then
    out[#out + 1] = h
    out[#out + 1] = rec
  end
end
return out
