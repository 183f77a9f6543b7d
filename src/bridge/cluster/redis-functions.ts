/**
 * The server side of the Redis engine (redis.ts): one Redis Functions
 * library (Redis >= 7.0, Valkey >= 7.2), loaded by a session when the
 * server does not have it (a new server, or one restarted without
 * persistence). Its name and its functions' names carry a hash of the code,
 * so that two versions of latchkey can share one server. Functions rather
 * than EVALSHA: the helpers are made once at load, not on every call (an
 * EVAL of the same code spent ~8 of its ~25 us making closures).
 *
 * Every change to a name's state is one function call: atomic, so no two
 * processes ever see half of a change, and FIFO order is the queue's.
 *
 * Keys of a name N (prefix P, 'latchkey:'; the name inside a hash tag so
 * that one name's keys would share a cluster slot):
 *   P{N}:s  HASH  tok   last fencing token issued
 *                 m     mode held, 'x' | 's' (absent when free)
 *                 nh    holders; nq waiters (so that the free case is one HMGET)
 *                 seq   arrival counter (while someone waits)
 *                 ab    '1': the last exclusive holder was lost holding it (the next grant is told)
 *                 idle  '1': the key has a PEXPIRE: free, and swept by an agent (idle()); it keeps
 *                       only the token, KEEP_MS past max(now, tok)
 *                 h:<owner>  a holder: tok|m|rid|sid|cid|exp|since|told|ttl
 *   P{N}:q  ZSET  waiting owners, score = arrival seq (FIFO)
 *   P{N}:w  HASH  waiter owner -> m|rid|sid|cid|ttl|since
 * Per agent `owner` (one per process):
 *   Pinbox:<owner>  LIST    its messages (RPUSH here, BLMPOP in the agent)
 *   Pagent:<owner>  HASH    sid (its current session), pid, host (for query())
 *
 * Messages (the name last: it may contain '|'):
 *   g|rid|tok|flags|name   granted (flags: 1 abandoned, 2 others wait)
 *   r|tok|reason|name      revoked: 'stolen' | 'expired'
 *   w|tok|name             another process now waits behind this grant
 *
 * No key has a TTL while it holds lock state, so only an allkeys-* policy
 * can evict one (such a server is refused). Time is the server's (TIME), in
 * ms. Tokens: max(last + 1, now, floor + 1), where floor is the highest
 * token the calling agent has seen for the name: after a restart that lost
 * the data they start from the server's clock, above every token issued
 * before unless a name sustained more than one grant per ms (redis.ts).
 */
import { createHash } from 'node:crypto';

/** Ms a free name's state (its token) is kept past max(now, tok). */
export const KEEP_MS = 600_000;
/** Ms the inbox and agent key of a session found dead are kept (an agent whose connection was killed comes back and takes them again). */
export const DEAD_INBOX_MS = 60_000;

const BODY = `
local P, NAME, S, Q, W
local function use(p, name)
  P, NAME = p, name
  local b = p .. '{' .. name .. '}:'
  S, Q, W = b .. 's', b .. 'q', b .. 'w'
end
-- Integers below 1e14 (tokens and epoch ms until year 5138) print exactly with %.14g, Lua's tostring.
local function fmt(n) return '' .. n end
local function num(x) return tonumber(x or '0') or 0 end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function split(s)
  local out, from = {}, 1
  while true do
    local i = string.find(s, '|', from, true)
    if not i then out[#out + 1] = string.sub(s, from); return out end
    out[#out + 1] = string.sub(s, from, i - 1)
    from = i + 1
  end
end
local function send(owner, msg) redis.call('RPUSH', P .. 'inbox:' .. owner, msg) end
local function token_after(last, now)
  if now > last then return now end
  return last + 1
end
local function holder_rec(tok, m, rid, sid, cid, now, told, ttl)
  return tok .. '|' .. m .. '|' .. rid .. '|' .. sid .. '|' .. cid .. '|' .. (now + ttl) .. '|' .. now .. '|' .. told .. '|' .. ttl
end
-- Holders are the h:<owner> fields of S: {owner, fields}…
local function holders()
  local all, out = redis.call('HGETALL', S), {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'h:' then out[#out + 1] = { string.sub(all[i], 3), split(all[i + 1]) } end
  end
  return out
end
-- A holder leaves without releasing (died, expired, stolen, replaced): the next grant is told if it was exclusive.
local function drop_holder(owner, rec, reason)
  if redis.call('HDEL', S, 'h:' .. owner) == 0 then return end
  if redis.call('HINCRBY', S, 'nh', -1) <= 0 then redis.call('HDEL', S, 'm', 'nh') end
  if reason then send(owner, 'r|' .. rec[1] .. '|' .. reason .. '|' .. NAME) end
  if rec[2] == 'x' then redis.call('HSET', S, 'ab', '1') end
end
local function drop_waiter(owner)
  if redis.call('ZREM', Q, owner) == 0 then return end
  redis.call('HDEL', W, owner)
  redis.call('HINCRBY', S, 'nq', -1)
end
local function reap_expired(now)
  for _, h in ipairs(holders()) do
    if tonumber(h[2][6]) <= now then drop_holder(h[1], h[2], 'expired') end
  end
end
local function holder_entries()
  local out = {}
  for _, h in ipairs(holders()) do
    out[#out + 1] = h[1]; out[#out + 1] = h[2][4]; out[#out + 1] = h[2][5]
  end
  return out
end
local function waiter_entries()
  local all, out = redis.call('HGETALL', W), {}
  for i = 1, #all, 2 do
    local r = split(all[i + 1])
    out[#out + 1] = all[i]; out[#out + 1] = r[3]; out[#out + 1] = r[4]
  end
  return out
end
-- The queue just became non-empty: every holder not told yet is told that someone waits.
local function tell_holders()
  for _, h in ipairs(holders()) do
    local rec = h[2]
    if rec[8] == '0' then
      rec[8] = '1'
      redis.call('HSET', S, 'h:' .. h[1], table.concat(rec, '|'))
      send(h[1], 'w|' .. rec[1] .. '|' .. NAME)
    end
  end
end
-- Web Locks order: grant the queue's head while it is grantable (one exclusive, or shared behind shared).
local function grant_next(now)
  while true do
    local st = redis.call('HMGET', S, 'tok', 'm', 'ab', 'nh', 'nq')
    local nh, nq = num(st[4]), num(st[5])
    if nq <= 0 then return end
    local head = redis.call('ZRANGE', Q, 0, 0)
    if #head == 0 then redis.call('HDEL', S, 'nq'); return end
    local o = head[1]
    local w = split(redis.call('HGET', W, o))
    if nh > 0 and not (w[1] == 's' and st[2] == 's') then return end
    redis.call('ZREM', Q, o)
    redis.call('HDEL', W, o)
    local tok = token_after(num(st[1]), now)
    local ab = st[3] == '1'
    if ab and w[1] == 'x' then redis.call('HDEL', S, 'ab') end
    nq = nq - 1
    redis.call('HSET', S, 'tok', fmt(tok), 'm', w[1], 'nh', nh + 1, 'nq', nq,
      'h:' .. o, holder_rec(tok, w[1], w[2], w[3], w[4], now, nq > 0 and '1' or '0', tonumber(w[5])))
    send(o, 'g|' .. w[2] .. '|' .. fmt(tok) .. '|' .. ((ab and 1 or 0) + (nq > 0 and 2 or 0)) .. '|' .. NAME)
    if w[1] == 'x' then return end -- nothing is grantable beside an exclusive holder
  end
end
-- After holders or waiters left: reap what expired, grant what is now grantable, clear the counters if free.
-- (A free name's S keeps its token; the agents' sweep gives it a TTL later, off the hot path: idle().)
local function settle(now)
  reap_expired(now)
  grant_next(now)
  local st = redis.call('HMGET', S, 'nh', 'nq')
  if num(st[1]) <= 0 and num(st[2]) <= 0 then redis.call('HDEL', S, 'm', 'nh', 'nq', 'seq') end
end

-- acquire(P, name, owner, mode 'x'|'s', flags (1 once, 2 steal), rid, sid, cid, ttl, floor)
--   → {1, tok, flags (1 abandoned, 2 others wait)} | {0, holders…} queued | {2, holders…} unavailable
--   holders: (owner, sid, cid) triples, for the caller's liveness check
local function acquire(_, a)
  use(a[1], a[2])
  local owner, mode, fl, rid, sid, cid, ttl = a[3], a[4], tonumber(a[5]), a[6], a[7], a[8], tonumber(a[9])
  local now = now_ms()
  local st = redis.call('HMGET', S, 'tok', 'ab', 'idle', 'nh', 'nq')
  if st[3] == '1' then redis.call('PERSIST', S) end -- swept: the TTL goes (the HSET below clears the flag)
  local last = math.max(num(st[1]), tonumber(a[10]))
  local nh, nq = num(st[4]), num(st[5])
  if nh == 0 and nq == 0 then
    -- The fast path: free.
    local tok = token_after(last, now)
    local ab = st[2] == '1'
    if ab and mode == 'x' then redis.call('HDEL', S, 'ab') end
    redis.call('HSET', S, 'tok', tok, 'm', mode, 'nh', 1, 'idle', '0', 'h:' .. owner, holder_rec(tok, mode, rid, sid, cid, now, '0', ttl))
    return { 1, fmt(tok), ab and 1 or 0 }
  end
  if last > num(st[1]) then redis.call('HSET', S, 'tok', fmt(last)) end
  -- Holders or waiters. First what ran out, then a retry of this very request (a lost reply, a new session).
  reap_expired(now)
  local mine = redis.call('HGET', S, 'h:' .. owner)
  if mine then
    local rec = split(mine)
    if rec[3] == rid then
      rec[4], rec[5], rec[6] = sid, cid, fmt(now + ttl)
      redis.call('HSET', S, 'h:' .. owner, table.concat(rec, '|'))
      return { 1, rec[1], num(redis.call('HGET', S, 'nq')) > 0 and 2 or 0 }
    end
    drop_holder(owner, rec, nil) -- an older grant of ours, counted lost by the agent
  end
  local waiting = redis.call('HGET', W, owner)
  if waiting then
    if split(waiting)[2] == rid then
      local r = split(waiting)
      r[3], r[4] = sid, cid
      redis.call('HSET', W, owner, table.concat(r, '|'))
      local out = holder_entries()
      table.insert(out, 1, 0)
      return out
    end
    drop_waiter(owner)
  end
  grant_next(now)
  st = redis.call('HMGET', S, 'tok', 'ab', 'm', 'nh', 'nq')
  nh, nq = num(st[4]), num(st[5])
  if math.floor(fl / 2) % 2 == 1 then
    for _, h in ipairs(holders()) do drop_holder(h[1], h[2], 'stolen') end
    st = redis.call('HMGET', S, 'tok', 'ab', 'm', 'nh', 'nq')
    nh = 0
  elseif not (nq == 0 and (nh == 0 or (mode == 's' and st[3] == 's'))) then
    local out = holder_entries()
    if fl % 2 == 1 then
      table.insert(out, 1, 2)
      return out
    end
    local seq = redis.call('HINCRBY', S, 'seq', 1)
    redis.call('ZADD', Q, seq, owner)
    redis.call('HSET', W, owner, table.concat({ mode, rid, sid, cid, ttl, fmt(now) }, '|'))
    redis.call('HSET', S, 'nq', nq + 1)
    if nq == 0 then tell_holders() end
    table.insert(out, 1, 0)
    return out
  end
  local tok = token_after(num(st[1]), now)
  local ab = st[2] == '1'
  if ab and mode == 'x' then redis.call('HDEL', S, 'ab') end
  redis.call('HSET', S, 'tok', fmt(tok), 'm', mode, 'nh', nh + 1, 'idle', '0',
    'h:' .. owner, holder_rec(tok, mode, rid, sid, cid, now, nq > 0 and '1' or '0', ttl))
  return { 1, fmt(tok), (ab and 1 or 0) + (nq > 0 and 2 or 0) }
end

-- release(P, name, owner, tok, abandoned '1'|'0') → 1 released | 0 not held (lost already)
local function release(_, a)
  use(a[1], a[2])
  local owner, tok = a[3], a[4]
  local st = redis.call('HMGET', S, 'h:' .. owner, 'nh', 'nq')
  local mine = st[1]
  if not (mine and string.sub(mine, 1, #tok + 1) == tok .. '|') then
    settle(now_ms())
    return 0
  end
  local ab = a[5] == '1' and string.sub(mine, #tok + 2, #tok + 2) == 'x'
  if num(st[2]) <= 1 and num(st[3]) <= 0 and not ab then
    -- The fast path: the last holder, nobody waits.
    redis.call('HDEL', S, 'h:' .. owner, 'm', 'nh', 'seq')
    return 1
  end
  if num(st[2]) <= 1 then
    -- The hand-over: the last holder leaves and someone waits.
    redis.call('HDEL', S, 'h:' .. owner, 'm', 'nh')
    if ab then redis.call('HSET', S, 'ab', '1') end
    grant_next(now_ms())
    return 1
  end
  redis.call('HDEL', S, 'h:' .. owner)
  redis.call('HSET', S, 'nh', num(st[2]) - 1)
  if ab then redis.call('HSET', S, 'ab', '1') end
  settle(now_ms())
  return 1
end

-- cancel(P, name, owner, rid) → 1 left the queue | 2 was granted meanwhile, given back | 0 not there
local function cancel(_, a)
  use(a[1], a[2])
  local owner, rid = a[3], a[4]
  local r = 0
  local w = redis.call('HGET', W, owner)
  if w and split(w)[2] == rid then
    drop_waiter(owner)
    r = 1
  end
  local h = redis.call('HGET', S, 'h:' .. owner)
  if h and split(h)[3] == rid then
    redis.call('HDEL', S, 'h:' .. owner)
    if redis.call('HINCRBY', S, 'nh', -1) <= 0 then redis.call('HDEL', S, 'm', 'nh') end
    r = 2
  end
  settle(now_ms())
  return r
end

-- renew(P, then (name, owner, tok, ttl)…) → {1|0…} (0: not ours any more, or its lease ran out)
local function renew(_, a)
  local now = now_ms()
  local out = {}
  for i = 2, #a, 4 do
    use(a[1], a[i])
    local ok = 0
    local mine = redis.call('HGET', S, 'h:' .. a[i + 1])
    if mine then
      local rec = split(mine)
      if rec[1] == a[i + 2] and tonumber(rec[6]) > now then
        rec[6] = fmt(now + tonumber(a[i + 3]))
        redis.call('HSET', S, 'h:' .. a[i + 1], table.concat(rec, '|'))
        ok = 1
      end
    end
    out[#out + 1] = ok
  end
  return out
end

-- peek(P, names…) → per name {name, nHolders, (owner, sid, cid)…, nWaiters, (owner, sid, cid)…}
-- The waiters' probe: reaps expired leases first, and grants what that frees.
local function peek(_, a)
  local now = now_ms()
  local out = {}
  for i = 2, #a do
    use(a[1], a[i])
    settle(now)
    local h, w = holder_entries(), waiter_entries()
    out[#out + 1] = NAME
    out[#out + 1] = #h / 3
    for j = 1, #h do out[#out + 1] = h[j] end
    out[#out + 1] = #w / 3
    for j = 1, #w do out[#out + 1] = w[j] end
  end
  return out
end

-- reap(P, name, (owner, sid)…) of sessions found gone → entries removed
local function reap(_, a)
  use(a[1], a[2])
  local n = 0
  for i = 3, #a, 2 do
    local owner, sid = a[i], a[i + 1]
    local h = redis.call('HGET', S, 'h:' .. owner)
    if h then
      local rec = split(h)
      if rec[4] == sid then drop_holder(owner, rec, nil); n = n + 1 end
    end
    local w = redis.call('HGET', W, owner)
    if w and split(w)[3] == sid then
      drop_waiter(owner)
      n = n + 1
    end
    -- Its inbox goes too, unless the agent came back since (a new sid).
    local ag = redis.call('HGET', P .. 'agent:' .. owner, 'sid')
    if ag == sid or ag == false then
      redis.call('PEXPIRE', P .. 'inbox:' .. owner, ${DEAD_INBOX_MS})
      redis.call('PEXPIRE', P .. 'agent:' .. owner, ${DEAD_INBOX_MS})
    end
  end
  settle(now_ms())
  return n
end

-- idle(P, names…): names this agent freed a while ago; each still free gets a TTL, so that its token
-- (all that is left) is kept KEEP_MS past max(now, tok) and then goes. → how many got one
local function idle(_, a)
  local now, n = now_ms(), 0
  for i = 2, #a do
    use(a[1], a[i])
    local st = redis.call('HMGET', S, 'tok', 'nh', 'nq', 'idle')
    if st[1] and num(st[2]) <= 0 and num(st[3]) <= 0 and st[4] ~= '1' then
      local keep = num(st[1]) - now
      if keep < 0 then keep = 0 end
      redis.call('HSET', S, 'idle', '1')
      redis.call('PEXPIRE', S, fmt(keep + ${KEEP_MS}))
      n = n + 1
    end
  end
  return n
end

-- list(P, names…) → {now, then (name, 'held'|'pending', owner, record, pid, host)…}; holders first, waiters in queue order
local function list(_, a)
  local out = { now_ms() }
  for i = 2, #a do
    use(a[1], a[i])
    local function row(state, owner, rec)
      local who = redis.call('HMGET', P .. 'agent:' .. owner, 'pid', 'host')
      out[#out + 1] = NAME; out[#out + 1] = state; out[#out + 1] = owner; out[#out + 1] = rec
      out[#out + 1] = who[1] or '0'; out[#out + 1] = who[2] or ''
    end
    for _, h in ipairs(holders()) do row('held', h[1], table.concat(h[2], '|')) end
    for _, o in ipairs(redis.call('ZRANGE', Q, 0, -1)) do row('pending', o, redis.call('HGET', W, o) or '') end
  end
  return out
end
`;

export const VERSION = createHash('sha1').update(BODY).digest('hex').slice(0, 10);
export const LIBRARY = `latchkey_${VERSION}`;
export const FN = {
  acquire: `${LIBRARY}_acquire`, release: `${LIBRARY}_release`, cancel: `${LIBRARY}_cancel`, renew: `${LIBRARY}_renew`,
  peek: `${LIBRARY}_peek`, reap: `${LIBRARY}_reap`, list: `${LIBRARY}_list`, idle: `${LIBRARY}_idle`,
} as const;
export type FnName = keyof typeof FN;

/** The library's source, as FUNCTION LOAD takes it. */
export const LIBRARY_CODE = `#!lua name=${LIBRARY}
${BODY}
redis.register_function{ function_name = '${FN.acquire}', callback = acquire }
redis.register_function{ function_name = '${FN.release}', callback = release, flags = { 'allow-oom' } }
redis.register_function{ function_name = '${FN.cancel}', callback = cancel, flags = { 'allow-oom' } }
redis.register_function{ function_name = '${FN.renew}', callback = renew, flags = { 'allow-oom' } }
redis.register_function{ function_name = '${FN.peek}', callback = peek, flags = { 'allow-oom' } }
redis.register_function{ function_name = '${FN.reap}', callback = reap, flags = { 'allow-oom' } }
redis.register_function{ function_name = '${FN.list}', callback = list, flags = { 'no-writes' } }
redis.register_function{ function_name = '${FN.idle}', callback = idle, flags = { 'allow-oom' } }
`;
