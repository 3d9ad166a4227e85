-- Add a delta (given as parts that each fit in signed 64 bits) to a counter, at most once
-- per request id. The request record holds the calling thread's last "<request id> <result>".
-- KEYS: 1 counter, 2 request record of the calling thread
-- ARGV: 1 request record lifetime ms, 2 request id, 3.. delta parts
-- Returns {1, value} or {0, error text}; on error nothing changed.
local done = redis.call('GET', KEYS[2])
if done then
  local sep = string.find(done, ' ', 1, true)
  if sep and string.sub(done, 1, sep - 1) == ARGV[2] then
    return {1, string.sub(done, sep + 1)}
  end
end
local value
if #ARGV == 3 then
  -- One part (the usual case): a failed INCRBY changes nothing, so there is nothing to undo.
  value = redis.pcall('INCRBY', KEYS[1], ARGV[3])
  if type(value) == 'table' then return {0, value.err} end
else
  local existed = redis.call('EXISTS', KEYS[1])
  local applied = {}
  for i = 3, #ARGV do
    local res = redis.pcall('INCRBY', KEYS[1], ARGV[i])
    if type(res) == 'table' then
      for j = #applied, 1, -1 do redis.call('DECRBY', KEYS[1], applied[j]) end
      if existed == 0 then redis.call('DEL', KEYS[1]) end
      return {0, res.err}
    end
    applied[#applied + 1] = ARGV[i]
    value = res
  end
end
-- INCRBY's reply reaches Lua as a double: exact below 2^53, else read the stored text.
if value > -9007199254740992 and value < 9007199254740992 then
  value = string.format('%.0f', value)
else
  value = redis.call('GET', KEYS[1])
end
redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. value, 'PX', ARGV[1])
return {1, value}
