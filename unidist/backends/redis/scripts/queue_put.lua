-- Enqueue one message unless its id is already in the queue (in any state), or it is the
-- calling thread's last put (which may have been consumed since: a retry must not repeat it).
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 put sequence, 5 wake list, 6 put record of the
--       calling thread ("id nonce" of its last put). Only the keys it touches: each KEYS
--       and ARGV entry costs the server about as much as a short command's parsing.
-- ARGV: 1 id, 2 body, 3 delay µs, 4 priority rank (16 hex), 5 nonce of this call,
--       6 put record lifetime ms
-- Message record: "attempts enqueued_us nonce rank receipt body" (receipt "-" when not in
-- flight; the body is the rest of the value).
-- Returns 1 if stored by this call (or by an earlier attempt of this same call), else 0.
-- The common path is 6 commands: the record (with its body) is claimed with HSETNX, which
-- is also the "already queued" check, and the put record is swapped with SET ... GET; the
-- rare duplicate paths undo what they claimed.
local t = redis.call('TIME')
-- Server time in µs as text, without a float round trip (t[2] has up to 6 digits).
local now = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
local seq = redis.call('INCR', KEYS[4])
local rank = ARGV[4] .. string.format('%016x', seq) .. ARGV[1]
local record = '0 ' .. now .. ' ' .. ARGV[5] .. ' ' .. rank .. ' - ' .. ARGV[2]
if redis.call('HSETNX', KEYS[1], ARGV[1], record) == 0 then
  local cur = redis.call('HGET', KEYS[1], ARGV[1])
  if string.match(cur, '^%d+ %d+ (%S+) ') == ARGV[5] then return 1 end
  return 0
end
local last = redis.call('SET', KEYS[6], ARGV[1] .. ' ' .. ARGV[5], 'PX', ARGV[6], 'GET')
if last then
  local sep = string.find(last, ' ', 1, true)
  if sep and string.sub(last, 1, sep - 1) == ARGV[1] then
    -- The thread's last put had this id (it may have been consumed since): store nothing.
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('SET', KEYS[6], last, 'PX', ARGV[6])
    if string.sub(last, sep + 1) == ARGV[5] then return 1 end
    return 0
  end
end
if ARGV[3] ~= '0' then
  redis.call('ZADD', KEYS[3], tonumber(now) + tonumber(ARGV[3]), ARGV[1])
else
  redis.call('ZADD', KEYS[2], 0, rank)
end
-- Wake one waiter. Takes do not pop wake-ups (an empty take deletes them), so the list is
-- cut back to 256 once it passes 512: one LTRIM per 256 puts at most.
if redis.call('RPUSH', KEYS[5], '1') > 512 then redis.call('LTRIM', KEYS[5], -256, -1) end
return 1
