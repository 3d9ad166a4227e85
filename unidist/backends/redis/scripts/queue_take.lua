-- Receive (ARGV[1] = 'r') or get (ARGV[1] = 'g') the first ready message.
-- First moves due delayed messages to ready, and expired in-flight messages back to ready
-- (or to the dead list once delivered max_attempts times).
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list
-- ARGV: 1 mode, 2 visibility µs, 3 max attempts, 4 random receipt part, 5 batch size,
--       6 consumer ('' for none; kept in the receipt after a '/')
-- Returns {1, id, record as stored before this call (the body follows its fifth space), attempts,
--          receipt, rank, enqueued µs}
--      or {0, µs until a delayed or in-flight message may become ready, or -1}.
local mode = ARGV[1]
local maxa = tonumber(ARGV[3])
local batch = tonumber(ARGV[5])
-- The server clock, read once and only when needed (a get with nothing delayed or in
-- flight never needs it).
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

-- One EXISTS instead of two range reads while nothing is delayed or in flight.
if redis.call('EXISTS', KEYS[3], KEYS[4]) > 0 then
  clock()
  local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, batch)
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[3], id)
    local meta = redis.call('HGET', KEYS[1], id)
    if meta then
      local _, _, _, rank = string.match(meta, pat)
      redis.call('ZADD', KEYS[2], 0, rank)
    end
  end
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

while true do
  local first = redis.call('ZPOPMIN', KEYS[2])
  if #first == 0 then
    local nxt = -1
    local d = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    if d[2] then nxt = tonumber(d[2]) end
    local f = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    if f[2] and (nxt < 0 or tonumber(f[2]) < nxt) then nxt = tonumber(f[2]) end
    if nxt >= 0 then nxt = math.max(nxt - clock(), 0) end
    -- Nothing is ready: pending wake-ups are stale.
    redis.call('DEL', KEYS[7])
    return {0, string.format('%.0f', nxt)}
  end
  -- Every ready entry has score 0: ZPOPMIN takes the lowest rank.
  local rank = first[1]
  -- The wake-up pushed for this message is left in place: a waiter that pops a stale one
  -- finds nothing, and its empty take clears them all (see above).
  local id = string.sub(rank, 33)
  local meta = redis.call('HGET', KEYS[1], id)
  if meta then
    local a, e, n, _, _, pos = string.match(meta, pat)
    local attempts = tonumber(a)
    if attempts >= maxa then
      -- Delivered max_attempts times already (e.g. a smaller max_attempts than before).
      redis.call('ZADD', KEYS[5], clock(), id)
    else
      attempts = attempts + 1
      local receipt = ''
      if mode == 'g' then
        redis.call('HDEL', KEYS[1], id)
        if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[6], KEYS[7]) end
      else
        receipt = attempts .. '.' .. ARGV[4]
        if ARGV[6] and ARGV[6] ~= '' then receipt = receipt .. '/' .. ARGV[6] end
        redis.call('ZADD', KEYS[4], clock() + tonumber(ARGV[2]), id)
        redis.call('HSET', KEYS[1], id, attempts .. ' ' .. e .. ' ' .. n .. ' ' .. rank .. ' ' .. receipt .. ' ' .. string.sub(meta, pos))
      end
      return {1, id, meta, attempts, receipt, rank, e}
    end
  end
end
