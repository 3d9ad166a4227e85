-- Enqueue a batch of messages in one step (all of them or, on an error, none: every
-- check that can fail is made by the client before the call).
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list,
--       8 put record of the calling thread
-- ARGV: 1 nonce of this call, 2 put record lifetime ms, 3 '1' to check for ids already
--       queued, '0' when the client has just generated every id at random (no check), then
--       4 per message: id, body, delay µs, priority rank (16 hex)
-- Message record: "attempts enqueued_us nonce rank receipt body", as queue_put.lua.
-- Returns one character per message: '1' stored by this call, '0' its id was already queued
-- (or repeated earlier in the batch).
-- A retry after a lost reply finds its own nonce in the put record ("* nonce bits") and
-- returns the first attempt's answer without storing anything again, even when consumers
-- took some of the messages in between.
local tag = '* ' .. ARGV[1] .. ' '
local last = redis.call('GET', KEYS[8])
if last and string.sub(last, 1, #tag) == tag then return string.sub(last, #tag + 1) end

local n = (#ARGV - 3) / 4
local t = redis.call('TIME')
local now = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
local nownum = tonumber(now)
local seq = redis.call('INCRBY', KEYS[6], n) - n
local prefix = '0 ' .. now .. ' ' .. ARGV[1] .. ' '
-- Many members/fields in one command; unpack in slices (Lua's stack is bounded).
local function bulk(cmd, key, args)
  for i = 1, #args, 1000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 999, #args)))
  end
end
local ids = {}
for i = 1, n do ids[i] = ARGV[4 * i] end
local check = ARGV[3] == '1'
local held = {}
if check then
  -- Which ids are queued already: one HMGET for the whole batch (in slices).
  for i = 1, n, 1000 do
    local part = redis.call('HMGET', KEYS[1], unpack(ids, i, math.min(i + 999, n)))
    for j = 1, #part do held[i + j - 1] = part[j] end
  end
end
local seen = {}
local bits = {}
local records, nrec = {}, 0
local ready, nready = {}, 0
local delayed, ndelayed = {}, 0
local stored = 0
for i = 1, n do
  local b = 4 * i
  local id = ids[i]
  seq = seq + 1
  if check and (held[i] or seen[id]) then
    bits[i] = '0'
  else
    if check then seen[id] = true end
    stored = stored + 1
    bits[i] = '1'
    local rank = ARGV[b + 3] .. string.format('%016x', seq) .. id
    records[nrec + 1] = id
    records[nrec + 2] = prefix .. rank .. ' - ' .. ARGV[b + 1]
    nrec = nrec + 2
    if ARGV[b + 2] ~= '0' then
      delayed[ndelayed + 1] = nownum + tonumber(ARGV[b + 2])
      delayed[ndelayed + 2] = id
      ndelayed = ndelayed + 2
    else
      ready[nready + 1] = rank
      nready = nready + 1
    end
  end
end
bulk('HSET', KEYS[1], records)
-- Highest rank first: each member then goes in at the front of a small (listpack) zset
-- instead of after every member added before it.
local desc = {}
for i = 1, nready do
  desc[2 * i - 1] = 0
  desc[2 * i] = ready[nready + 1 - i]
end
bulk('ZADD', KEYS[2], desc)
bulk('ZADD', KEYS[3], delayed)
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
