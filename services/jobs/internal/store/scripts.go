package store

import "github.com/redis/go-redis/v9"

// Every state change of a task is one Lua script, so it is atomic against
// every other replica and worker: the script checks the state, the
// generation or the lease token it was called for, and changes nothing if
// they no longer match. Times come from the caller in Unix milliseconds.
//
// Task hash fields: state, gen (bumped whenever the task becomes pending,
// so a stale broker message is recognised and dropped), token (fencing
// token of the current lease: on every lease the greater of one more and
// the time in ms, so a lease lost in a Redis failover is not handed out
// again), attempts, free
// (attempts that do not count against max retries: manual retries and
// "retry later"), cancel, lease and hard (deadlines of the current
// attempt), started, finished, created, worker, result, error, and the
// immutable settings spec (JSON), name, queue, maxr, bo, bomax, hardms,
// expire.

// enqueueScript creates a pending task unless the id exists or its unique
// key is held. KEYS: task, index, sched, queues set, unique key.
// ARGV: id, now, due, member (tenant|id), uniqueTTL, unique ("1" to use the key),
// queue, maxQueues, holdMs, then field/value pairs. holdMs > 0 puts the
// schedule entry that much after due: the caller publishes the note
// itself, and the pump publishes it only if the caller did not.
// Returns 1, 0 if the id exists, -1 if the queue would be one more than
// maxQueues, or the id holding the unique key.
var enqueueScript = redis.NewScript(taskLua + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SISMEMBER', KEYS[4], ARGV[7]) == 0 and redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[8]) then return -1 end
local f = {}
for i = 10, #ARGV do f[#f+1] = ARGV[i] end
if ARGV[6] == '1' then
  local holder = redis.call('GET', KEYS[5])
  if holder and holder ~= ARGV[1] then return holder end
  redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[5])
  f[#f+1] = 'ukey'; f[#f+1] = KEYS[5]
end
new_task(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], f, false)
if tonumber(ARGV[9]) > 0 then redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[9]), ARGV[4] .. '|1') end
return 1
`)

// claimScript takes due entries off the schedule for publishing: it pushes
// their score rearm ms into the future, so a replica that dies before it
// published them leaves them to be claimed again, never lost.
// KEYS: sched. ARGV: now, limit, rearm.
var claimScript = redis.NewScript(`
local m = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, v in ipairs(m) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), v) end
return m
`)

// leaseScript starts an attempt of a pending task of generation gen. Its
// note has arrived, so whatever the outcome the schedule's entry for that
// generation (kept in case the note was lost) goes.
// KEYS: task, leases, qstat, sched, done channel, outbox, paused set,
// parked zset, rate limits of the tenant. ARGV: gen, now, leaseMs, worker,
// member, retentionMs, id, queue (the queue the caller took KEYS[3] and
// KEYS[8] from, or ""), deadRetentionMs.
// A task whose name is rate limited (see RateLimit) and whose start now
// would go over the limit gets a turn of its own in the line: it becomes
// generation gen+1, due at that turn, with rlgen marking that the turn is
// taken, and starts then without queueing again.
// (The unique key is named by the task's ukey field; it shares the hash
// tag, so it lives on the same Cluster shard.)
// Returns {status, token, attempt, lease, hard, spec, due, prev}: status 1 leased,
// 0 stale message, -1 no such task, -2 expired (now cancelled), -3 parked
// because its queue is paused, -4 the task is in another queue (nothing
// changed; look the queue up and try again), -5 deferred by its rate limit.
var leaseScript = redis.NewScript(taskLua + `
if ARGV[8] ~= '' then
  local q = redis.call('HGET', KEYS[1], 'queue')
  if q and q ~= ARGV[8] then return {-4} end
end
redis.call('ZREM', KEYS[4], ARGV[5] .. '|' .. ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'state', 'gen', 'expire', 'hardms', 'spec', 'due', 'name', 'prev')
if not s[1] then return {-1} end
if s[1] ~= 'pending' or s[2] ~= ARGV[1] then return {0} end
local now = tonumber(ARGV[2])
local expire = tonumber(s[3] or '0')
if expire > 0 and now > expire then
  local u = redis.call('HGET', KEYS[1], 'ukey')
  if u and redis.call('GET', u) == ARGV[7] then redis.call('DEL', u) end
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished', now, 'error', 'expired before it started')
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PUBLISH', KEYS[5], 'cancelled')
  redis.call('ZADD', KEYS[6], now, ARGV[5] .. '|cancelled|' .. redis.call('HGET', KEYS[1], 'attempts'))
  canvas_ended(KEYS[1], 'cancelled', now, KEYS[4], KEYS[6], ARGV[6], ARGV[9])
  return {-2}
end
if redis.call('SISMEMBER', KEYS[7], redis.call('HGET', KEYS[1], 'queue')) == 1 then
  redis.call('ZADD', KEYS[8], now, ARGV[5] .. '|' .. s[2])
  return {-3}
end
local limit = redis.call('HGET', KEYS[9], 'c:' .. s[7])
if limit then
  local sp = string.find(limit, ' ')
  local period = 1000 / tonumber(string.sub(limit, 1, sp - 1))
  local burst = tonumber(string.sub(limit, sp + 1))
  local tat = math.max(tonumber(redis.call('HGET', KEYS[9], 't:' .. s[7]) or '0'), now)
  local line = tonumber(redis.call('HGET', KEYS[9], 'r:' .. s[7]) or '0')
  local earliest = tat + period - burst * period
  if now >= earliest and (line <= now or redis.call('HGET', KEYS[1], 'rlgen') == s[2]) then
    redis.call('HSET', KEYS[9], 't:' .. s[7], tat + period)
  else
    local at = math.max(line, earliest, now)
    redis.call('HSET', KEYS[9], 'r:' .. s[7], at + period)
    local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
    redis.call('HSET', KEYS[1], 'due', math.ceil(at), 'rlgen', gen)
    redis.call('ZADD', KEYS[4], math.ceil(at), ARGV[5] .. '|' .. gen)
    return {-5, math.ceil(at)}
  end
end
-- The token is at least now (ms): a lease whose write a Redis failover
-- lost left the counter behind, and counting on from there would hand
-- the next lease the token the lost one's holder still has.
local token = math.max(tonumber(redis.call('HGET', KEYS[1], 'token') or '0') + 1, now)
redis.call('HSET', KEYS[1], 'token', string.format('%d', token))
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local hard = now + tonumber(s[4])
local lease = math.min(now + tonumber(ARGV[3]), hard)
redis.call('HSET', KEYS[1], 'state', 'running', 'started', now, 'lease', lease, 'hard', hard, 'worker', ARGV[4])
redis.call('ZADD', KEYS[2], lease, ARGV[5])
redis.call('HINCRBY', KEYS[3], 'running', 1)
return {1, token, attempt, lease, hard, s[5], tonumber(s[6] or ARGV[2]), s[8] or ''}
`)

// lostLeaseLua recovers from a lease whose write a Redis failover lost: the
// task is pending again at the generation its holder leased, with a token
// below the holder's, and its note was consumed, so only its schedule
// entry (pushed NoteTimeout ahead when the note was published) would
// start it again. Called with the holder's token, it makes the entry due
// now and raises the stored token to the holder's, so the next lease's
// token differs (fencing). Tokens only grow, so a lower stored token
// proves the lease was lost (of this task: one due later is a new task
// under an expired one's id, and keeps its time).
const lostLeaseLua = `
local function lost_lease(k, sched, state, stored, token, gen, due, mem, now)
  if state == 'pending' and token ~= '*' and tonumber(stored or '0') < tonumber(token) and tonumber(due or '0') <= tonumber(now) then
    redis.call('HSET', k, 'token', token)
    redis.call('ZADD', sched, now, mem .. '|' .. gen)
  end
end
`

// heartbeatScript extends the lease of token up to the hard deadline.
// KEYS: task, leases, sched. ARGV: token, now, leaseMs, member.
// Returns {1, lease, cancel} or {0}.
var heartbeatScript = redis.NewScript(lostLeaseLua + `
local s = redis.call('HMGET', KEYS[1], 'state', 'token', 'hard', 'cancel', 'lease', 'gen', 'due')
if s[1] ~= 'running' or s[2] ~= ARGV[1] then
  lost_lease(KEYS[1], KEYS[3], s[1], s[2], ARGV[1], s[6], s[7], ARGV[4], ARGV[2])
  return {0}
end
local now = tonumber(ARGV[2])
if now >= tonumber(s[5]) then return {0} end
local lease = math.min(now + tonumber(ARGV[3]), tonumber(s[3]))
redis.call('HSET', KEYS[1], 'lease', lease)
redis.call('ZADD', KEYS[2], lease, ARGV[4])
return {1, lease, s[4] or '0'}
`)

// endScript ends the attempt of lease token. outcome is ok, fail or
// expire; expire (the reaper) applies only once the lease has run out, and
// token may then be "*" for whatever lease is current.
// KEYS: task, attempts, leases, sched, done channel, outbox.
// ARGV: token, now, outcome, result, error, noRetry, retryAfterMs, jitter
// (0..1), member (tenant|id), resultTTL, deadTTL, id, maxDead, maxLog,
// qstat key prefix, dead key prefix. The queue's qstat and dead keys are
// the prefixes and the task's queue (read here, so an end is one round
// trip; they share the hash tag, so they live on the task's Cluster slot).
// The attempt log keeps the latest maxLog attempts ("retry later" adds one
// each time, without end); the dead set drops entries past the retention
// and beyond maxDead, oldest first. A task that ends moves its chain or
// group on (canvas_ended).
// Returns {status, state, ended, queue, name, started}: status 1 with the
// new state, 0 with the state that refused the outcome (ended is the state
// the attempt was ended in when it was refused at its hard deadline), -1
// when there is no such task.
var endScript = redis.NewScript(taskLua + lostLeaseLua + `
local s = redis.call('HMGET', KEYS[1], 'state', 'token', 'lease', 'attempts', 'free', 'maxr', 'bo', 'bomax', 'cancel', 'started', 'worker', 'gen', 'hard', 'queue', 'name', 'due')
-- The reaper's expiry of an attempt that is no longer running drops the
-- stale lease entry here, atomically: dropped after the script, it could
-- take the entry of a lease made in between.
if not s[14] then
  if ARGV[3] == 'expire' then redis.call('ZREM', KEYS[3], ARGV[9]) end
  return {-1}
end
local function reply(status, state, ended) return {status, state, ended or '', s[14], s[15] or '', s[10] or '0'} end
if s[1] ~= 'running' then
  if ARGV[3] == 'expire' then redis.call('ZREM', KEYS[3], ARGV[9]) end
  lost_lease(KEYS[1], KEYS[4], s[1], s[2], ARGV[1], s[12], s[16], ARGV[9], ARGV[2])
  return reply(0, s[1] or '')
end
if ARGV[1] ~= '*' and s[2] ~= ARGV[1] then return reply(0, 'stale') end
local qstat, dead = ARGV[15] .. s[14], ARGV[16] .. s[14]
local now = tonumber(ARGV[2])
local outcome, err = ARGV[3], ARGV[5]
-- An outcome reported at or after the hard deadline is refused, even if
-- the reaper has not come round yet: the attempt is ended as expired.
local refused = false
if outcome ~= 'expire' and now >= tonumber(s[13]) then outcome, refused = 'expire', true end
if outcome == 'expire' then
  if now < tonumber(s[3]) and not refused then return reply(0, 'running') end
  if now >= tonumber(s[13]) then err = 'hard time limit exceeded' else err = 'lease expired: no heartbeat from the worker' end
end
redis.call('HINCRBY', qstat, 'running', -1)
redis.call('ZREM', KEYS[3], ARGV[9])
local attempt = tonumber(s[4])
local function log(o, e)
  redis.call('RPUSH', KEYS[2], cjson.encode({number = attempt, start = tonumber(s[10]), ['end'] = now, outcome = o, error = e, worker = s[11]}))
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[14]), -1)
end
local function finish(state, ttl)
  local u = redis.call('HGET', KEYS[1], 'ukey')
  if u and redis.call('GET', u) == ARGV[12] then redis.call('DEL', u) end
  redis.call('HSET', KEYS[1], 'state', state, 'finished', now)
  redis.call('HDEL', KEYS[1], 'lease', 'hard')
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PUBLISH', KEYS[5], state)
  redis.call('ZADD', KEYS[6], now, ARGV[9] .. '|' .. state .. '|' .. attempt)
  canvas_ended(KEYS[1], state, now, KEYS[4], KEYS[6], ARGV[10], ARGV[11])
  if refused then return reply(0, 'stale', state) end
  return reply(1, state)
end
if outcome == 'ok' then
  log('succeeded', '')
  redis.call('HSET', KEYS[1], 'result', ARGV[4], 'error', '')
  return finish('succeeded', ARGV[10])
end
if s[9] == '1' then
  if err == '' then err = 'cancelled' end
  log('cancelled', err)
  redis.call('HSET', KEYS[1], 'error', err)
  return finish('cancelled', ARGV[10])
end
log('failed', err)
redis.call('HSET', KEYS[1], 'error', err)
local function again(delay)
  local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
  redis.call('HSET', KEYS[1], 'state', 'pending', 'due', now + delay)
  redis.call('HDEL', KEYS[1], 'lease', 'hard')
  redis.call('ZADD', KEYS[4], now + delay, ARGV[9] .. '|' .. gen)
  if refused then return reply(0, 'stale', 'pending') end
  return reply(1, 'pending')
end
local after = tonumber(ARGV[7])
if after > 0 then
  redis.call('HINCRBY', KEYS[1], 'free', 1)
  return again(after)
end
local spent = attempt - tonumber(s[5])
if ARGV[6] ~= '1' and spent <= tonumber(s[6]) then
  local bound = math.min(tonumber(s[8]), tonumber(s[7]) * math.pow(2, spent - 1))
  return again(math.floor(bound * tonumber(ARGV[8])))
end
redis.call('ZADD', dead, now, ARGV[12])
redis.call('ZREMRANGEBYSCORE', dead, '-inf', '(' .. (now - tonumber(ARGV[11])))
redis.call('ZREMRANGEBYRANK', dead, 0, -tonumber(ARGV[13]) - 1)
return finish('failed', ARGV[11])
`)

// cancelScript cancels a pending task at once and marks a running one.
// KEYS: task, sched, done channel, outbox. ARGV: now, member (tenant|id),
// ttl, id, deadTTL. Returns the state after the call.
var cancelScript = redis.NewScript(taskLua + `
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return '' end
if cancel_pending(KEYS[1], KEYS[2], KEYS[4], KEYS[3], ARGV[2], ARGV[4], ARGV[1], ARGV[3], 'cancelled before it started') then
  canvas_ended(KEYS[1], 'cancelled', ARGV[1], KEYS[2], KEYS[4], ARGV[3], ARGV[5])
  return 'cancelled'
end
if st == 'running' then redis.call('HSET', KEYS[1], 'cancel', 1) end
return st
`)

// retryScript makes a failed or cancelled task pending again with a fresh
// retry budget. KEYS: task, attempts, sched, dead. ARGV: now, member, id.
// Returns 1, or 0 with the task in another state, -1 if missing.
var retryScript = redis.NewScript(`
local s = redis.call('HMGET', KEYS[1], 'state', 'attempts')
if not s[1] then return -1 end
if s[1] ~= 'failed' and s[1] ~= 'cancelled' then return 0 end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'state', 'pending', 'free', s[2], 'cancel', 0, 'due', ARGV[1])
redis.call('HDEL', KEYS[1], 'finished', 'expire')
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2] .. '|' .. gen)
return 1
`)

// resumeScript unpauses a queue and makes its parked tasks due now.
// KEYS: paused set, parked zset, sched. ARGV: queue, now.
var resumeScript = redis.NewScript(`
redis.call('SREM', KEYS[1], ARGV[1])
local m = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, v in ipairs(m) do redis.call('ZADD', KEYS[3], ARGV[2], v) end
redis.call('DEL', KEYS[2])
return #m
`)
