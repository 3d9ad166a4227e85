-- The part queue_take.lua and queue_take_many.lua share (spliced in at their include line):
-- the server clock, read once and only when needed (a get with nothing delayed or in flight
-- never needs it), the record pattern, and the return of expired deliveries.
local now
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return now
end
-- A record is "attempts enqueued_us nonce rank receipt body"; pos is where the body starts.
local pat = '^(%d+) (%d+) (%S+) (%S+) (%S+) ()'
-- In-flight messages whose visibility deadline has passed (at most batch of them) go back to
-- ready, or to the dead list once delivered maxa times. Call after clock().
local function requeue_expired(batch, maxa)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, batch)
  for _, id in ipairs(expired) do
    redis.call('ZREM', KEYS[4], id)
    local meta = redis.call('HGET', KEYS[1], id)
    if meta then
      local a, e, n, rank, _, pos = string.match(meta, pat)
      redis.call('HSET', KEYS[1], id, a .. ' ' .. e .. ' ' .. n .. ' ' .. rank .. ' - ' .. string.sub(meta, pos))
      if tonumber(a) >= maxa then
        redis.call('ZADD', KEYS[5], now, id)
      else
        redis.call('ZADD', KEYS[2], 0, rank)
      end
    end
  end
end
