-- Enqueue a batch of messages in one step (all of them or, on an error, none: every
-- check that can fail is made by the client before the call).
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list,
--       8 put record of the calling thread
-- ARGV: 1 nonce of this call, 2 put record lifetime ms, then 4 per message:
--       id, body, delay µs, priority rank (16 hex)
-- Message record: "attempts enqueued_us nonce rank receipt body", as queue_put.lua.
-- Returns one character per message: '1' stored by this call, '0' its id was already queued
-- (or repeated earlier in the batch).
-- A retry after a lost reply finds its own nonce in the put record ("* nonce bits") and
-- returns the first attempt's answer without storing anything again, even when consumers
-- took some of the messages in between.
local tag = '* ' .. ARGV[1] .. ' '
local last = redis.call('GET', KEYS[8])
if last and string.sub(last, 1, #tag) == tag then return string.sub(last, #tag + 1) end

local n = (#ARGV - 2) / 4
local t = redis.call('TIME')
local now = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
local nownum = tonumber(now)
local seq = redis.call('INCRBY', KEYS[6], n) - n
local prefix = '0 ' .. now .. ' ' .. ARGV[1] .. ' '
local bits = {}
local ready = {}
local delayed = {}
local stored = 0
for i = 0, n - 1 do
  local b = 3 + 4 * i
  local id = ARGV[b]
  seq = seq + 1
  local rank = ARGV[b + 3] .. string.format('%016x', seq) .. id
  if redis.call('HSETNX', KEYS[1], id, prefix .. rank .. ' - ' .. ARGV[b + 1]) == 1 then
    stored = stored + 1
    bits[i + 1] = '1'
    if ARGV[b + 2] ~= '0' then
      delayed[#delayed + 1] = nownum + tonumber(ARGV[b + 2])
      delayed[#delayed + 1] = id
    else
      ready[#ready + 1] = 0
      ready[#ready + 1] = rank
    end
  else
    bits[i + 1] = '0'
  end
end
-- ZADD with many members at once; unpack in slices (Lua's stack is bounded).
local function zadd(key, args)
  for i = 1, #args, 1000 do
    redis.call('ZADD', key, unpack(args, i, math.min(i + 999, #args)))
  end
end
zadd(KEYS[2], ready)
zadd(KEYS[3], delayed)
local answer = table.concat(bits)
redis.call('SET', KEYS[8], tag .. answer, 'PX', ARGV[2])
if stored > 0 then
  -- One wake-up per stored message, up to 64 (each waiter pops one; see queue_put.lua).
  local wakes = {}
  for i = 1, math.min(stored, 64) do wakes[i] = '1' end
  if redis.call('RPUSH', KEYS[7], unpack(wakes)) > 512 then
    redis.call('LTRIM', KEYS[7], -256, -1)
  end
end
return answer
