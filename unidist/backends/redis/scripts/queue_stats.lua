-- Counts as of now: due delayed messages count as ready.
-- KEYS: 1 messages, 2 ready, 3 delayed, 4 in flight, 5 dead, 6 put sequence, 7 wake list
-- Returns {ready, delayed, in flight, dead, µs until something may become ready or -1}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nowtxt = string.format('%.0f', now)
local due = redis.call('ZCOUNT', KEYS[3], '-inf', nowtxt)
local later = redis.call('ZCOUNT', KEYS[3], '(' .. nowtxt, '+inf')
local nxt = -1
local d = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if d[2] then nxt = tonumber(d[2]) end
local f = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if f[2] and (nxt < 0 or tonumber(f[2]) < nxt) then nxt = tonumber(f[2]) end
if nxt >= 0 then nxt = math.max(nxt - now, 0) end
return {redis.call('ZCARD', KEYS[2]) + due, later, redis.call('ZCARD', KEYS[4]),
        redis.call('ZCARD', KEYS[5]), string.format('%.0f', nxt)}
