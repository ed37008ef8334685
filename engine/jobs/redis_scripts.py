"""The Lua scripts of the fleet's store: every change that must happen whole, or only from the state it
expects, runs as one script, which Redis runs with nothing in between.

So credits cannot be overdrawn by concurrent submits (the check and the reservation are one step), a
job is charged or refunded exactly once (only the script that moves it out of PROCESSING does it), a
worker's late result after another worker took its job over is refused (the script checks who holds
the job), and a claim moves a job from the queue to its worker's lease at once. The layout of the keys
is in redis_layout. Scripts reach keys named inside the job (its endpoint, its API key), so the store
needs a single Redis server, not a cluster.

Every script receives the key prefix as ARGV[1].
"""

from __future__ import annotations

PRELUDE = r"""
local p = ARGV[1]

local function job_key(id) return p .. 'job:' .. id end

-- the sorted set of a key's jobs by seq (its listings read only it)
local function owned_key(key_id) return p .. 'owned:' .. key_id end

-- the sorted set of an API's jobs by seq (ComfyUI's listings read only ComfyUI's jobs)
local function api_key(api) return p .. 'api:' .. api end

-- the version of the listing indexes a store holds once they cover every job (BACKFILL builds them)
local INDEXES = '2'

local function hash(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return false end
  return flat
end

local function unqueue(id)
  local k = job_key(id)
  local member = redis.call('HGET', k, 'qmember')
  local endpoint = redis.call('HGET', k, 'endpoint')
  redis.call('ZREM', p .. 'queued', member)
  redis.call('ZREM', p .. 'queue:' .. endpoint, member)
end

local function enqueue(id)
  local k = job_key(id)
  local member = redis.call('HGET', k, 'qmember')
  local number = redis.call('HGET', k, 'number')
  local endpoint = redis.call('HGET', k, 'endpoint')
  redis.call('ZADD', p .. 'queued', number, member)
  redis.call('ZADD', p .. 'queue:' .. endpoint, number, member)
end

-- end the job's lease: its entry leaves its endpoint's stream
local function release(id)
  local k = job_key(id)
  local entry = redis.call('HGET', k, 'entry')
  if entry then
    local stream = p .. 'run:' .. redis.call('HGET', k, 'endpoint')
    redis.call('XACK', stream, 'workers', entry)
    redis.call('XDEL', stream, entry)
  end
  redis.call('HDEL', k, 'entry', 'worker')
end

-- PROCESSING -> status, with the credits and the webhook outbox in the same step (the caller checked
-- that the job is PROCESSING). `fields` are the result's hash fields, `ttl_ms` how long it is kept.
local function finish(id, status, now, ttl_ms, fields)
  local k = job_key(id)
  release(id)
  redis.call('HSET', k, 'status', status, 'finished_at', now)
  if #fields > 0 then redis.call('HSET', k, unpack(fields)) end
  redis.call('ZADD', p .. 'finished', now, id)
  redis.call('ZREM', p .. 'unfinished', id)
  local url = redis.call('HGET', k, 'webhook_url')
  if url and redis.call('EXISTS', p .. 'outbox:' .. id) == 0 then
    redis.call('HSET', p .. 'outbox:' .. id, 'url', url, 'attempts', 0)
    redis.call('ZADD', p .. 'outbox', now, id)
  end
  local key_id = redis.call('HGET', k, 'key_id')
  local cost = redis.call('HGET', k, 'cost_micros')
  if key_id and cost ~= '0' and redis.call('EXISTS', p .. 'key:' .. key_id) == 1 then
    redis.call('HINCRBY', p .. 'key:' .. key_id, 'reserved_micros', '-' .. cost)
    if status == 'COMPLETED' then
      redis.call('HINCRBY', p .. 'key:' .. key_id, 'balance_micros', '-' .. cost)
    end
  end
  local ttl = tonumber(ttl_ms)
  if ttl > 0 then
    redis.call('PEXPIRE', k, ttl)
    redis.call('PEXPIRE', p .. 'log:' .. id, ttl)
  end
end

-- delete a finished job with everything kept for it and its entries in every index; its hash may be
-- gone already (Redis dropped it at its TTL), the key it belonged to is then found in `jobowner`, and
-- it leaves the set of every API (there are a few)
local function drop(id)
  local k = job_key(id)
  local idem = redis.call('HGET', k, 'idempotency_key')
  if idem then
    redis.call('DEL', p .. 'idem:' .. (redis.call('HGET', k, 'key_id') or '') .. ':' .. idem)
  end
  redis.call('DEL', k, p .. 'log:' .. id, p .. 'deliveries:' .. id, p .. 'outbox:' .. id)
  local owner = redis.call('HGET', p .. 'jobowner', id)
  if owner then
    redis.call('ZREM', owned_key(owner), id)
    redis.call('HDEL', p .. 'jobowner', id)
  end
  for _, api in ipairs(redis.call('SMEMBERS', p .. 'apis')) do redis.call('ZREM', api_key(api), id) end
  for _, index in ipairs({'outbox', 'jobs', 'finished', 'unfinished'}) do
    redis.call('ZREM', p .. index, id)
  end
end
"""

SUBMIT = (
    PRELUDE
    + r"""
-- ARGV: p, id, key_id ('' none), idempotency key ('' none), cost_micros, number ('' none), front,
-- endpoint, then the job's other fields as field, value pairs
local id, key_id, idem, cost = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local idem_key = p .. 'idem:' .. key_id .. ':' .. idem
if idem ~= '' then
  local existing = redis.call('GET', idem_key)
  if existing then
    local found = hash(job_key(existing))
    if found then return {'existing', found} end
  end
end
local k = job_key(id)
if redis.call('EXISTS', k) == 1 then return {'taken'} end
if key_id ~= '' and cost ~= '0' then
  local key = p .. 'key:' .. key_id
  local balance = redis.call('HGET', key, 'balance_micros')
  if not balance then return {'credits', '0'} end
  local available = tonumber(balance) - tonumber(redis.call('HGET', key, 'reserved_micros'))
  if available < tonumber(cost) then return {'credits', tostring(available)} end
  redis.call('HINCRBY', key, 'reserved_micros', cost)
end
local seq = redis.call('INCR', p .. 'seq')
local number = ARGV[6]
if number == '' then
  if ARGV[7] == '1' then number = tostring(-seq) else number = tostring(seq) end
end
local member = string.format('%015d', seq) .. ':' .. id
local endpoint = ARGV[8]
redis.call('HSET', k, 'id', id, 'seq', seq, 'status', 'QUEUED', 'attempts', 0, 'cancel_requested', 0,
  'number', number, 'qmember', member, 'endpoint', endpoint, 'cost_micros', cost)
if key_id ~= '' then redis.call('HSET', k, 'key_id', key_id) end
if idem ~= '' then
  redis.call('HSET', k, 'idempotency_key', idem)
  redis.call('SET', idem_key, id)
end
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
if #fields > 0 then redis.call('HSET', k, unpack(fields)) end
-- never created before the job that arrived before it (API processes' clocks differ a little), so the
-- order of creation is the order of arrival, which the indexes hold
local created, latest = redis.call('HGET', k, 'created_at'), redis.call('GET', p .. 'created')
if latest and tonumber(latest) > tonumber(created) then
  redis.call('HSET', k, 'created_at', latest)
else
  redis.call('SET', p .. 'created', created)
end
-- the first job of a store is indexed from the start: nothing to build (BACKFILL) for it
if redis.call('EXISTS', p .. 'jobs') == 0 then redis.call('SET', p .. 'indexes', INDEXES) end
redis.call('ZADD', p .. 'jobs', seq, id)
local api = redis.call('HGET', k, 'api')
redis.call('ZADD', api_key(api), seq, id)
redis.call('SADD', p .. 'apis', api)
redis.call('ZADD', p .. 'unfinished', seq, id)
if key_id ~= '' then
  redis.call('ZADD', owned_key(key_id), seq, id)
  redis.call('HSET', p .. 'jobowner', id, key_id)
end
redis.call('SADD', p .. 'endpoints', endpoint)
enqueue(id)
return {'created', hash(k)}
"""
)

CLAIM = (
    PRELUDE
    + r"""
-- ARGV: p, worker, now, lease_ms, max_attempts, ttl_ms, n_allowed (-1: any), allowed..., preferred...
local worker, now, lease, max_attempts, ttl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local n_allowed = tonumber(ARGV[7])
local allowed, preferred = {}, {}
local at = 8
if n_allowed >= 0 then
  for i = 1, n_allowed do allowed[i] = ARGV[at]; at = at + 1 end
end
for i = at, #ARGV do preferred[#preferred + 1] = ARGV[i] end

local function ensure_group(stream)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, 'workers', '$', 'MKSTREAM')
  end
end

-- first, a job whose worker stopped sending heartbeats for a lease: it runs again here
local reclaim = allowed
if n_allowed < 0 then reclaim = redis.call('SMEMBERS', p .. 'endpoints') end
for _, endpoint in ipairs(reclaim) do
  local stream = p .. 'run:' .. endpoint
  if redis.call('EXISTS', stream) == 1 then
    local cursor = '0-0'
    for _ = 1, 100 do
      local reply = redis.call('XAUTOCLAIM', stream, 'workers', worker, lease, cursor, 'COUNT', 1)
      cursor = reply[1]
      local entry = reply[2][1]
      if entry then
        local entry_id, id = entry[1], entry[2][2]
        local k = job_key(id)
        if redis.call('HGET', k, 'status') == 'PROCESSING' and redis.call('HGET', k, 'entry') == entry_id then
          local attempts = tonumber(redis.call('HGET', k, 'attempts'))
          local dead = redis.call('HGET', k, 'worker')
          if redis.call('HGET', k, 'cancel_requested') == '1' then
            finish(id, 'CANCELLED', now, ttl, {'error', 'cancelled by the client'})
          elseif attempts >= max_attempts then
            finish(id, 'FAILED', now, ttl, {'error', 'the worker running this job stopped ' .. attempts ..
              ' times; giving up'})
          else
            redis.call('HSET', k, 'worker', worker, 'started_at', now)
            redis.call('HINCRBY', k, 'attempts', 1)
            redis.call('HDEL', k, 'progress_value', 'progress_total')
            return {'reclaimed', hash(k), dead or ''}
          end
        else
          redis.call('XACK', stream, 'workers', entry_id)
          redis.call('XDEL', stream, entry_id)
        end
      end
      if cursor == '0-0' then break end
    end
  end
end

-- else the first queued job: of a preferred endpoint if any has one, else of any allowed one
local best, best_score
local function consider(zkey)
  local head = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  if head[1] then
    local score = tonumber(head[2])
    if not best or score < best_score or (score == best_score and head[1] < best) then
      best, best_score = head[1], score
    end
  end
end
local is_allowed = {}
for _, endpoint in ipairs(allowed) do is_allowed[endpoint] = true end
for _, endpoint in ipairs(preferred) do
  if n_allowed < 0 or is_allowed[endpoint] then consider(p .. 'queue:' .. endpoint) end
end
if not best then
  if n_allowed < 0 then
    consider(p .. 'queued')
  else
    for _, endpoint in ipairs(allowed) do consider(p .. 'queue:' .. endpoint) end
  end
end
if not best then return {'none'} end
local id = string.sub(best, 17)
local k = job_key(id)
unqueue(id)
local stream = p .. 'run:' .. redis.call('HGET', k, 'endpoint')
ensure_group(stream)
redis.call('XADD', stream, '*', 'job', id)
local read = redis.call('XREADGROUP', 'GROUP', 'workers', worker, 'COUNT', 1, 'STREAMS', stream, '>')
local entry_id = read[1][2][1][1]
redis.call('HSET', k, 'status', 'PROCESSING', 'started_at', now, 'worker', worker, 'entry', entry_id)
redis.call('HINCRBY', k, 'attempts', 1)
return {'claimed', hash(k)}
"""
)

FINISH = (
    PRELUDE
    + r"""
-- ARGV: p, id, worker ('' any), status, now, ttl_ms, then result fields as field, value pairs
local id, worker, status = ARGV[2], ARGV[3], ARGV[4]
local k = job_key(id)
if redis.call('HGET', k, 'status') ~= 'PROCESSING' then return false end
if worker ~= '' and redis.call('HGET', k, 'worker') ~= worker then return false end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
finish(id, status, ARGV[5], ARGV[6], fields)
return hash(k)
"""
)

CANCEL = (
    PRELUDE
    + r"""
-- ARGV: p, id, now, ttl_ms, only_queued ('1': ComfyUI's queue delete, never a running job)
local id = ARGV[2]
local k = job_key(id)
local status = redis.call('HGET', k, 'status')
if not status then return false end
if status == 'QUEUED' then
  unqueue(id)
  finish(id, 'CANCELLED', ARGV[3], ARGV[4], {'error', 'cancelled by the client'})
  return hash(k)
end
if ARGV[5] == '1' then return false end
if status == 'PROCESSING' then redis.call('HSET', k, 'cancel_requested', 1) end
return hash(k)
"""
)

REQUEUE = (
    PRELUDE
    + r"""
-- ARGV: p, id, worker ('' any)
local id, worker = ARGV[2], ARGV[3]
local k = job_key(id)
if redis.call('HGET', k, 'status') ~= 'PROCESSING' then return 0 end
if worker ~= '' and redis.call('HGET', k, 'worker') ~= worker then return 0 end
release(id)
local attempts = tonumber(redis.call('HGET', k, 'attempts'))
redis.call('HSET', k, 'status', 'QUEUED', 'attempts', math.max(attempts - 1, 0))
redis.call('HDEL', k, 'started_at')
enqueue(id)
return 1
"""
)

HEARTBEAT = (
    PRELUDE
    + r"""
-- ARGV: p, id, worker. Claiming the entry again for the same consumer resets its idle time.
local id, worker = ARGV[2], ARGV[3]
local k = job_key(id)
if redis.call('HGET', k, 'status') ~= 'PROCESSING' or redis.call('HGET', k, 'worker') ~= worker then
  return 0
end
local entry = redis.call('HGET', k, 'entry')
local stream = p .. 'run:' .. redis.call('HGET', k, 'endpoint')
redis.call('XCLAIM', stream, 'workers', worker, 0, entry, 'JUSTID')
return 1
"""
)

DROP = (
    PRELUDE
    + r"""
-- ARGV: p, then the ids of finished jobs to delete (forgotten or expired)
for i = 2, #ARGV do drop(ARGV[i]) end
return #ARGV - 1
"""
)

PAGE = (
    PRELUDE
    + r"""
-- ARGV: p, offset, limit (-1: no limit), descending ('1'), then the sets the jobs must all be in: the
-- first scored by seq (the order of the page), the others (the key's, the API's, the unfinished or the
-- finished jobs) narrowing it. Returns {total, id...}: the page of the jobs in every set, by seq, cut
-- before any job is read (the caller reads them). A job whose hash Redis dropped at its TTL before the
-- expiry sweep came is dropped from the indexes here, and the page cut again.
local offset, limit, descending = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local sets = {}
for i = 5, #ARGV do sets[#sets + 1] = p .. ARGV[i] end
local source = sets[1]
-- ZINTER numkeys key... WEIGHTS 1 0...: the intersection scored by the first set's seq alone
local inter = {'ZINTER', #sets}
for _, set in ipairs(sets) do inter[#inter + 1] = set end
inter[#inter + 1] = 'WEIGHTS'
for i = 1, #sets do inter[#inter + 1] = (i == 1) and 1 or 0 end
while true do
  local total, ids = 0, {}
  if #sets == 1 then
    total = redis.call('ZCARD', source)
    local stop = -1
    if limit >= 0 then stop = offset + limit - 1 end
    if limit ~= 0 and offset < total then
      if descending then
        ids = redis.call('ZRANGE', source, offset, stop, 'REV')
      else
        ids = redis.call('ZRANGE', source, offset, stop)
      end
    end
  else
    local all = redis.call(unpack(inter))
    total = #all
    local last = total
    if limit >= 0 then last = math.min(total, offset + limit) end
    for i = offset + 1, last do
      if descending then ids[#ids + 1] = all[total + 1 - i] else ids[#ids + 1] = all[i] end
    end
  end
  local gone = false
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', job_key(id)) == 0 then
      drop(id)
      redis.call('ZREM', source, id)
      gone = true
    end
  end
  if not gone then
    table.insert(ids, 1, total)
    return ids
  end
end
"""
)

BACKFILL = (
    PRELUDE
    + r"""
-- ARGV: p. Build the listing indexes (`unfinished`, `owned:{key}`, `jobowner`, `api:{api}`, `apis`) of a
-- store written before they existed, or before some of them did (its `indexes` is an older version),
-- once: every job in `jobs` whose hash is still there. Adding a job to an index it is in changes nothing.
if redis.call('GET', p .. 'indexes') == INDEXES then return 0 end
local listed = redis.call('ZRANGE', p .. 'jobs', 0, -1, 'WITHSCORES')
for i = 1, #listed, 2 do
  local id, seq = listed[i], listed[i + 1]
  local fields = redis.call('HMGET', job_key(id), 'status', 'key_id', 'api')
  if fields[1] == 'QUEUED' or fields[1] == 'PROCESSING' then
    redis.call('ZADD', p .. 'unfinished', seq, id)
  end
  if fields[2] then
    redis.call('ZADD', owned_key(fields[2]), seq, id)
    redis.call('HSET', p .. 'jobowner', id, fields[2])
  end
  if fields[3] then
    redis.call('ZADD', api_key(fields[3]), seq, id)
    redis.call('SADD', p .. 'apis', fields[3])
  end
end
redis.call('SET', p .. 'indexes', INDEXES)
return 1
"""
)

NOTE = r"""
-- ARGV: p, id, kind, field, value pairs. A log line or progress of an existing job: the progress is also
-- the job's current figure; the stream lives as long as the job.
local p, id = ARGV[1], ARGV[2]
local k = p .. 'job:' .. id
if redis.call('EXISTS', k) == 0 then return 0 end
local fields = {'kind', ARGV[3]}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
if ARGV[3] == 'progress' then
  redis.call('HSET', k, 'progress_value', ARGV[5], 'progress_total', ARGV[7])
end
redis.call('XADD', p .. 'log:' .. id, '*', unpack(fields))
local ttl = redis.call('PTTL', k)
if ttl > 0 then redis.call('PEXPIRE', p .. 'log:' .. id, ttl) end
return 1
"""

CLAIM_WEBHOOK = r"""
-- ARGV: p, now, lease_s
local p, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
while true do
  local due = redis.call('ZRANGEBYSCORE', p .. 'outbox', '-inf', ARGV[2], 'LIMIT', 0, 1)[1]
  if not due then return false end
  local k = p .. 'outbox:' .. due
  if redis.call('EXISTS', k) == 1 then
    local attempts = redis.call('HINCRBY', k, 'attempts', 1)
    redis.call('ZADD', p .. 'outbox', now + lease, due)
    return {due, redis.call('HGET', k, 'url'), attempts}
  end
  redis.call('ZREM', p .. 'outbox', due)
end
"""

WEBHOOK_ATTEMPTED = r"""
-- ARGV: p, id, delivery (JSON), retry_at ('' : leave the outbox)
local p, id = ARGV[1], ARGV[2]
local log = p .. 'deliveries:' .. id
redis.call('RPUSH', log, ARGV[3])
local ttl = redis.call('PTTL', p .. 'job:' .. id)
if ttl > 0 then redis.call('PEXPIRE', log, ttl) end
if ARGV[4] == '' then
  redis.call('ZREM', p .. 'outbox', id)
  redis.call('DEL', p .. 'outbox:' .. id)
else
  redis.call('ZADD', p .. 'outbox', 'XX', ARGV[4], id)
end
return 1
"""

CLAIM_ONCE = r"""
-- ARGV: p, name, now, lifetime_s. True if this request now holds the key: set if absent, or taken
-- over if the claim holding it is older than the lifetime; the key expires with its lifetime.
local k, now, lifetime = ARGV[1] .. ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl = math.max(1, math.ceil(lifetime * 1000))
if redis.call('SET', k, ARGV[3], 'NX', 'PX', ttl) then return 1 end
if tonumber(redis.call('GET', k)) < now - lifetime then
  redis.call('SET', k, ARGV[3], 'PX', ttl)
  return 1
end
return 0
"""

RATE_LIMIT = r"""
-- ARGV: p, key id, per_minute. One token from the key's bucket (refilled continuously, a minute's worth
-- at most), timed by the Redis server's clock so every API process counts alike. Returns 0 when allowed,
-- else the seconds until a token is free, as a string.
local k, per_minute = ARGV[1] .. 'rate:' .. ARGV[2], tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local rate = per_minute / 60
local tokens = tonumber(redis.call('HGET', k, 'tokens') or per_minute)
local updated = tonumber(redis.call('HGET', k, 'updated') or now)
tokens = math.min(per_minute, tokens + (now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', k, 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', k, 120)
return tostring(wait)
"""

REVOKE_KEY = r"""
-- ARGV: p, key id, now
local k = ARGV[1] .. 'key:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 or redis.call('HEXISTS', k, 'revoked_at') == 1 then return 0 end
redis.call('HSET', k, 'revoked_at', ARGV[3])
redis.call('SREM', ARGV[1] .. 'keys:live', ARGV[2])
return 1
"""

ADD_CREDITS = r"""
-- ARGV: p, key id, micro-credits
local k = ARGV[1] .. 'key:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return false end
redis.call('HINCRBY', k, 'balance_micros', ARGV[3])
return redis.call('HGETALL', k)
"""
