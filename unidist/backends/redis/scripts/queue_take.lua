-- Receive (ARGV[1] = 'r') or get (ARGV[1] = 'g') the first ready message.
-- First moves due delayed messages to ready, and expired in-flight messages back to ready
-- (or to the dead list once delivered max_attempts times).
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list
-- ARGV: 1 mode, 2 max attempts, 3 promote batch, and for a receive only: 4 visibility µs,
--       5 random receipt part, 6 consumer ('' for none; kept in the receipt after a '/')
-- Returns {1, record as stored before this call: "attempts enqueued_us nonce rank receipt
--          body"} (the client adds 1 to attempts, builds the receipt as this script does, and
--          reads the id from the rank's end)
--      or {0, µs until a delayed or in-flight message may become ready, or -1}.
-- Cost matters here (issue #11): a get of a ready message is 4 commands (EXISTS, ZPOPMIN,
-- HGET, HDEL), the record is not parsed while its attempts are 0, and the reply is the
-- record as stored. The bookkeeping keys of an empty queue (put sequence, wake list) are
-- deleted by the next take that finds nothing ready, not by the take of the last message.
local mode = ARGV[1]
local maxa = tonumber(ARGV[2])
local batch = tonumber(ARGV[3])
-- @include _queue_common.lua

-- One EXISTS instead of two range reads while nothing is delayed or in flight.
local pending = redis.call('EXISTS', KEYS[3], KEYS[4]) > 0
if pending then
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
  requeue_expired(batch, maxa)
end

local find = string.find
while true do
  local first = redis.call('ZPOPMIN', KEYS[2])
  if #first == 0 then
    local nxt = -1
    if pending then
      local d = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
      if d[2] then nxt = tonumber(d[2]) end
      local f = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
      if f[2] and (nxt < 0 or tonumber(f[2]) < nxt) then nxt = tonumber(f[2]) end
      if nxt >= 0 then nxt = math.max(nxt - clock(), 0) end
    end
    -- Nothing is ready: pending wake-ups are stale, and an empty queue keeps no keys.
    if redis.call('HLEN', KEYS[1]) == 0 then
      redis.call('DEL', KEYS[6], KEYS[7])
    else
      redis.call('DEL', KEYS[7])
    end
    return {0, string.format('%.0f', nxt)}
  end
  -- Every ready entry has score 0: ZPOPMIN takes the lowest rank.
  local rank = first[1]
  -- The wake-up pushed for this message is left in place: a waiter that pops a stale one
  -- finds nothing, and its empty take clears them all (see above).
  local id = string.sub(rank, 33)
  local meta = redis.call('HGET', KEYS[1], id)
  if meta then
    -- Attempts are the record's first field: "0 " (never delivered) needs no parsing.
    local p1 = 2
    local attempts = 0
    if string.byte(meta, 1) ~= 48 or string.byte(meta, 2) ~= 32 then
      p1 = find(meta, ' ', 1, true)
      attempts = tonumber(string.sub(meta, 1, p1 - 1))
    end
    if attempts >= maxa then
      -- Delivered max_attempts times already (e.g. a smaller max_attempts than before).
      redis.call('ZADD', KEYS[5], clock(), id)
    elseif mode == 'g' then
      redis.call('HDEL', KEYS[1], id)
      return {1, meta}
    else
      attempts = attempts + 1
      local receipt = attempts .. '.' .. ARGV[5]
      if ARGV[6] ~= '' then receipt = receipt .. '/' .. ARGV[6] end
      -- The receipt is the fifth field: it ends at the fifth space (rank has no spaces).
      local p4 = find(meta, ' ', find(meta, ' ', find(meta, ' ', p1 + 1, true) + 1, true) + 1, true)
      local p5 = find(meta, ' ', p4 + 1, true)
      redis.call('ZADD', KEYS[4], clock() + tonumber(ARGV[4]), id)
      redis.call('HSET', KEYS[1], id, attempts .. string.sub(meta, p1, p4) .. receipt .. string.sub(meta, p5))
      return {1, meta}
    end
  end
end
