-- Receive (ARGV[1] = 'r') or get (ARGV[1] = 'g') up to ARGV[7] ready messages in one step,
-- in the order queue_take.lua would return them one by one.
-- First moves due delayed messages to ready, and expired in-flight messages back to ready
-- (or to the dead list once delivered max_attempts times).
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list
-- ARGV: 1 mode, 2 visibility µs, 3 max attempts, 4 random receipt part, 5 promote batch,
--       6 consumer ('' for none; kept in the receipt after a '/'), 7 most messages to take
-- Returns {1, then per message its record as stored before this call: "attempts enqueued_us
--          nonce rank receipt body" (the client adds 1 to attempts, builds the receipt as
--          this script does, and reads the id from the rank's end)}
--      or {0, µs until a delayed or in-flight message may become ready, or -1}.
local mode = ARGV[1]
local maxa = tonumber(ARGV[3])
local batch = tonumber(ARGV[5])
local want = tonumber(ARGV[7])
-- @include _queue_common.lua
-- Many members/fields in one command; unpack in slices (Lua's stack is bounded).
local function bulk(cmd, key, args)
  for i = 1, #args, 1000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 999, #args)))
  end
end

if redis.call('EXISTS', KEYS[3], KEYS[4]) > 0 then
  clock()
  local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, batch)
  if #due > 0 then
    local ranks = {}
    for _, id in ipairs(due) do
      local meta = redis.call('HGET', KEYS[1], id)
      if meta then
        local _, _, _, rank = string.match(meta, pat)
        ranks[#ranks + 1] = 0
        ranks[#ranks + 1] = rank
      end
    end
    bulk('ZREM', KEYS[3], due)
    bulk('ZADD', KEYS[2], ranks)
  end
  requeue_expired(batch, maxa)
end

local out = {1}
local got = 0
local gone, ngone = {}, 0
local flight, records, nflight = {}, {}, 0
while got < want do
  local popped = redis.call('ZPOPMIN', KEYS[2], math.min(want - got, 1000))
  if #popped == 0 then break end
  -- Every ready entry has score 0: ZPOPMIN takes the lowest ranks. One HMGET for all.
  local ranks, ids, m = {}, {}, 0
  for j = 1, #popped, 2 do
    m = m + 1
    ranks[m] = popped[j]
    ids[m] = string.sub(popped[j], 33)
  end
  local metas = redis.call('HMGET', KEYS[1], unpack(ids))
  for j = 1, m do
    local meta = metas[j]
    if meta then
      local attempts = tonumber(string.match(meta, '^%d+'))
      if attempts >= maxa then
        redis.call('ZADD', KEYS[5], clock(), ids[j])
      else
        attempts = attempts + 1
        if mode == 'g' then
          ngone = ngone + 1
          gone[ngone] = ids[j]
        else
          local _, e, n, _, _, pos = string.match(meta, pat)
          local receipt = attempts .. '.' .. ARGV[4]
          if ARGV[6] ~= '' then receipt = receipt .. '/' .. ARGV[6] end
          flight[2 * nflight + 1] = clock() + tonumber(ARGV[2])
          flight[2 * nflight + 2] = ids[j]
          records[2 * nflight + 1] = ids[j]
          records[2 * nflight + 2] = attempts .. ' ' .. e .. ' ' .. n .. ' ' .. ranks[j] .. ' ' .. receipt .. ' ' .. string.sub(meta, pos)
          nflight = nflight + 1
        end
        got = got + 1
        out[got + 1] = meta
      end
    end
  end
end

if got == 0 then
  local nxt = -1
  local d = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if d[2] then nxt = tonumber(d[2]) end
  local f = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if f[2] and (nxt < 0 or tonumber(f[2]) < nxt) then nxt = tonumber(f[2]) end
  if nxt >= 0 then nxt = math.max(nxt - clock(), 0) end
  redis.call('DEL', KEYS[7])
  return {0, string.format('%.0f', nxt)}
end
if mode == 'g' then
  bulk('HDEL', KEYS[1], gone)
  if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[6], KEYS[7]) end
else
  bulk('ZADD', KEYS[4], flight)
  bulk('HSET', KEYS[1], records)
end
return out
