package store

import "github.com/redis/go-redis/v9"

// taskLua is Lua shared by the scripts that create or end tasks, so a task
// is created, cancelled and moved along by one piece of code whichever
// script does it. Every script that ends a task calls canvas_ended in the
// same script, so the step from one member of a chain or group to the next
// is atomic with the end of the member: two replicas ending the last two
// members of a chord at once still enqueue its callback once, and a crash
// cannot fall between the end of a member and the release of the next.
//
// A canvas (chain or group) is a hash {p}:cv:<tenant>:<id> with kind, n
// (members), state (running, succeeded, failed, cancelled), error,
// created, finished, tenant, mp (member id prefix "<id>-"), tp and dp (the
// prefixes of task keys and done channels, so member keys under the same
// hash tag can be named), cb ("1" for a chord), pass ("1" to pass
// results), and as it runs: step (a chain's current step), e:<n> (a group
// member's end state, set once), ended (members ended), why (a group's
// first failure), r:<n> and rbytes (a chord's member results).
//
// Members are created with the canvas. One that waits for its turn (a
// chain's later steps, a chord's callback) is pending with held=1 and not
// in the schedule; canvas_ended releases it (writes due and, when results
// are passed, prev, and schedules it) or cancels it. A member's hash names
// its canvas in cv and its place in cvi (0 for the callback).
const taskLua = `
local function new_task(k, index, sched, queues, id, now, due, mem, fields, held)
  local f = {'state', 'pending', 'gen', 1, 'token', 0, 'attempts', 0, 'free', 0, 'created', now, 'due', due}
  for _, v in ipairs(fields) do f[#f+1] = v end
  redis.call('HSET', k, unpack(f))
  redis.call('ZADD', index, now, id)
  if not held then redis.call('ZADD', sched, due, mem .. '|1') end
  redis.call('SADD', queues, redis.call('HGET', k, 'queue'))
end

local function cancel_pending(k, sched, outbox, done, mem, id, now, ttl, err)
  local s = redis.call('HMGET', k, 'state', 'gen', 'attempts')
  if s[1] ~= 'pending' then return false end
  redis.call('ZREM', sched, mem .. '|' .. s[2])
  redis.call('HINCRBY', k, 'gen', 1)
  local u = redis.call('HGET', k, 'ukey')
  if u and redis.call('GET', u) == id then redis.call('DEL', u) end
  redis.call('HSET', k, 'state', 'cancelled', 'finished', now, 'error', err)
  redis.call('HDEL', k, 'held')
  redis.call('PEXPIRE', k, ttl)
  redis.call('PUBLISH', done, 'cancelled')
  redis.call('ZADD', outbox, now, mem .. '|cancelled|' .. s[3])
  return true
end

local max_chord_results = 16777216

local function canvas_ended(k, state, now, sched, outbox, rttl, dttl)
  local f = redis.call('HMGET', k, 'cv', 'cvi', 'error', 'result')
  if not f[1] then return end
  local cv, i = f[1], tonumber(f[2])
  local c = redis.call('HMGET', cv, 'state', 'kind', 'n', 'tenant', 'mp', 'tp', 'dp', 'step', 'cb', 'pass')
  if c[1] ~= 'running' then return end
  now = tonumber(now)
  local n = tonumber(c[3])
  local function id(j)
    if j == 0 then return c[5] .. 'callback' end
    return c[5] .. j
  end
  local function cancel(j, why)
    cancel_pending(c[6] .. id(j), sched, outbox, c[7] .. id(j), c[4] .. '|' .. id(j), id(j), now, rttl, why)
  end
  local function finish(st, why)
    redis.call('HSET', cv, 'state', st, 'finished', now, 'error', why)
    if st == 'failed' then redis.call('PEXPIRE', cv, dttl) else redis.call('PEXPIRE', cv, rttl) end
  end
  local function release(j, prev)
    local m = c[6] .. id(j)
    local s = redis.call('HMGET', m, 'state', 'gen', 'delay', 'eta')
    if s[1] ~= 'pending' then return s[1] or 'gone' end
    local due = now + tonumber(s[3] or '0')
    local eta = tonumber(s[4] or '0')
    if eta > due then due = eta end
    if prev and c[10] == '1' then redis.call('HSET', m, 'prev', prev) end
    redis.call('HSET', m, 'due', due)
    redis.call('HDEL', m, 'held')
    redis.call('ZADD', sched, due, c[4] .. '|' .. id(j) .. '|' .. s[2])
    return nil
  end
  local err = f[3] or ''
  if c[2] == 'chain' then
    local step = tonumber(c[8])
    if state == 'succeeded' then
      if i ~= step then return end
      if i == n then finish('succeeded', '') return end
      redis.call('HSET', cv, 'step', i + 1)
      local other = release(i + 1, f[4] or 'null')
      if not other then return end
      i, state, err = i + 1, other, 'it was ' .. other .. ' before its turn'
    end
    local why = 'step ' .. i .. ' (' .. id(i) .. ') ' .. state .. ': ' .. err
    if state == 'cancelled' then finish('cancelled', why) else finish('failed', why) end
    for j = step, n do
      if j ~= i then cancel(j, 'chain stopped: ' .. why) end
    end
    return
  end
  if redis.call('HSETNX', cv, 'e:' .. i, state) == 0 then return end
  if i == 0 then
    if state == 'succeeded' then finish('succeeded', '') return end
    local why = 'callback (' .. id(0) .. ') ' .. state .. ': ' .. err
    if state == 'cancelled' then finish('cancelled', why) else finish('failed', why) end
    return
  end
  if state == 'succeeded' then
    if c[9] == '1' and c[10] == '1' then
      local r = f[4] or 'null'
      redis.call('HSET', cv, 'r:' .. i, r)
      redis.call('HINCRBY', cv, 'rbytes', #r + 1)
    end
  elseif not redis.call('HGET', cv, 'why') then
    redis.call('HSET', cv, 'why', 'member ' .. i .. ' (' .. id(i) .. ') ' .. state .. ': ' .. err)
  end
  if redis.call('HINCRBY', cv, 'ended', 1) < n then return end
  local why = redis.call('HGET', cv, 'why')
  local size = tonumber(redis.call('HGET', cv, 'rbytes') or '0')
  if not why and size > max_chord_results then
    why = 'the members\' results are ' .. size .. ' bytes together, over the ' .. max_chord_results .. ' a callback may be passed'
  end
  if why then
    finish('failed', why)
    if c[9] == '1' then cancel(0, 'chord stopped: ' .. why) end
  elseif c[9] == '1' then
    local prev = nil
    if c[10] == '1' then
      local parts = {}
      for j = 1, n do
        parts[j] = redis.call('HGET', cv, 'r:' .. j) or 'null'
        redis.call('HDEL', cv, 'r:' .. j)
      end
      prev = '[' .. table.concat(parts, ',') .. ']'
    end
    release(0, prev)
  else
    finish('succeeded', '')
  end
end
`

// canvasScript creates a chain or group with all its member tasks, unless
// the canvas exists. KEYS: canvas, index, sched, queues set, the tenant's
// index of canvases of its kind. ARGV: now,
// maxQueues, canvas fields (JSON list of strings), members (JSON list of
// {id, due, q (queue), held, f (field/value strings)}), task key prefix,
// tenant. Returns 1, 0 if the canvas exists, -1 if its queues would be
// more than maxQueues, or the id of a member task that exists already.
var canvasScript = redis.NewScript(taskLua + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ms = cjson.decode(ARGV[4])
local queues, count = {}, redis.call('SCARD', KEYS[4])
for _, m in ipairs(ms) do
  if redis.call('EXISTS', ARGV[5] .. m.id) == 1 then return m.id end
  if not queues[m.q] and redis.call('SISMEMBER', KEYS[4], m.q) == 0 then count = count + 1 end
  queues[m.q] = true
end
if count > tonumber(ARGV[2]) then return -1 end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[3])))
redis.call('ZADD', KEYS[5], ARGV[1], ARGV[7])
for _, m in ipairs(ms) do
  new_task(ARGV[5] .. m.id, KEYS[2], KEYS[3], KEYS[4], m.id, ARGV[1], m.due, ARGV[6] .. '|' .. m.id, m.f, m.held)
end
return 1
`)

// cancelCanvasScript cancels a running canvas of kind: its pending members
// are cancelled, running ones are asked to stop, and since the canvas is no
// longer running their ends move nothing on. KEYS: canvas, sched, outbox.
// ARGV: now, ttl, kind. Returns the canvas's state after the call, or ""
// if there is no such canvas of that kind.
var cancelCanvasScript = redis.NewScript(taskLua + `
local c = redis.call('HMGET', KEYS[1], 'state', 'kind', 'n', 'tenant', 'mp', 'tp', 'dp', 'cb')
if not c[1] or c[2] ~= ARGV[3] then return '' end
if c[1] ~= 'running' then return c[1] end
local why = c[2] .. ' cancelled'
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished', ARGV[1], 'error', why)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local first = 1
if c[8] == '1' then first = 0 end
for j = first, tonumber(c[3]) do
  local id = c[5] .. j
  if j == 0 then id = c[5] .. 'callback' end
  local k = c[6] .. id
  if not cancel_pending(k, KEYS[2], KEYS[3], c[7] .. id, c[4] .. '|' .. id, id, ARGV[1], ARGV[2], why) then
    if redis.call('HGET', k, 'state') == 'running' then redis.call('HSET', k, 'cancel', 1) end
  end
end
return 'cancelled'
`)
