/**
 * The Lua scripts of cluster presence (presence-registry.ts). Each runs
 * atomically in Redis, so of two nodes racing, exactly one sees a user's
 * first connection anywhere (or last), and of two reapers exactly one takes
 * a dead node's users offline.
 *
 * Keys:
 *   ts:node:<node>    heartbeat, a TTL of --presence-ttl, refreshed every third of it
 *   ts:nodes          the nodes that have (or had, until reaped) a heartbeat
 *   ts:online:<node>  the users with at least one connection on that node
 *   ts:where:<user>   the nodes holding at least one connection of that user
 *                     (empty, so gone, when the user is offline everywhere)
 *   ts:everyone       the users online anywhere (read by a node that may have
 *                     missed changes, to catch up)
 *   ts:pseq           the counter ordering presence changes
 *
 * The scripts compute user and node keys from their arguments, which a
 * single Redis server (with or without replicas) allows and Redis Cluster
 * does not: presence needs one Redis primary. (The pub/sub channels are
 * sharded and would spread over a Redis Cluster; these keys would need one
 * hash tag, `{ts}`, to live there.)
 *
 * The script that decides a change also announces it (SPUBLISH on
 * ts:presence, the bus's wire format, origin the node that ran it): in the
 * same atomic step, so announcements go out in the order of the changes
 * and a node that dies just after cannot take one with it. Every change
 * gets a number from ts:pseq; a node keeps the latest per user. The counter
 * starts at the server's clock in microseconds when missing (a Redis
 * restarted without its data), so numbers keep growing across restarts.
 * User ids and node ids are digits and [A-Za-z0-9_.:-], so the JSON is
 * built by concatenation.
 */

const ANNOUNCE = `
local function announce(origin, changes)
  local n = #changes / 2
  if n == 0 then return 0 end
  if redis.call('EXISTS', 'ts:pseq') == 0 then
    local t = redis.call('TIME')
    redis.call('SET', 'ts:pseq', t[1] .. string.format('%06d', tonumber(t[2])))
  end
  local first = redis.call('INCRBY', 'ts:pseq', n) - n + 1
  local items = {}
  for i = 1, n do
    table.insert(items, '[' .. changes[2 * i - 1] .. ',' .. changes[2 * i] .. ',' .. string.format('%d', first + i - 1) .. ']')
    if #items == 500 or i == n then
      redis.call('SPUBLISH', 'ts:presence', '{"o":"' .. origin .. '","k":"presence","f":{"c":[' .. table.concat(items, ',') .. ']}}')
      items = {}
    end
  end
  return first
end
`;

/** ARGV: node, user. Returns the change's number when the user was offline everywhere before (announced), else 0. */
export const JOIN = `${ANNOUNCE}
local node, user = ARGV[1], ARGV[2]
redis.call('SADD', 'ts:online:' .. node, user)
if redis.call('SADD', 'ts:where:' .. user, node) == 1 and redis.call('SCARD', 'ts:where:' .. user) == 1 then
  redis.call('SADD', 'ts:everyone', user)
  return announce(node, {user, 1})
end
return 0
`;

/** ARGV: node, user. Returns the change's number when this was the user's last node (announced), else 0. */
export const LEAVE = `${ANNOUNCE}
local node, user = ARGV[1], ARGV[2]
redis.call('SREM', 'ts:online:' .. node, user)
if redis.call('SREM', 'ts:where:' .. user, node) == 1 and redis.call('SCARD', 'ts:where:' .. user) == 0 then
  redis.call('SREM', 'ts:everyone', user)
  return announce(node, {user, 0})
end
return 0
`;

/**
 * ARGV: node, ttl in ms, the number of users that follow, every user with a
 * connection on the node, then the users whose last connection here closed
 * while Redis could not be told. Sets the heartbeat and makes Redis hold
 * exactly those users for the node (after a Redis restart, a reaping of a
 * node that was only slow, a start under a node id whose last run died).
 * A departed user Redis does not know at all (it restarted empty) and no
 * other node holds is announced offline too: nobody else can.
 * Returns {first number, {user, 1|0, ...}}.
 */
export const SYNC = `${ANNOUNCE}
local node = ARGV[1]
local online = 'ts:online:' .. node
redis.call('SET', 'ts:node:' .. node, '1', 'PX', ARGV[2])
redis.call('SADD', 'ts:nodes', node)
local count = tonumber(ARGV[3])
local want = {}
for i = 4, 3 + count do want[ARGV[i]] = true end
local changes, done = {}, {}
for _, u in ipairs(redis.call('SMEMBERS', online)) do
  if not want[u] then
    redis.call('SREM', online, u)
    if redis.call('SREM', 'ts:where:' .. u, node) == 1 and redis.call('SCARD', 'ts:where:' .. u) == 0 then
      redis.call('SREM', 'ts:everyone', u)
      table.insert(changes, u)
      table.insert(changes, 0)
    end
    done[u] = true
  end
end
for i = 4 + count, #ARGV do
  local u = ARGV[i]
  if not want[u] and not done[u] and redis.call('EXISTS', 'ts:where:' .. u) == 0 then
    redis.call('SREM', 'ts:everyone', u)
    table.insert(changes, u)
    table.insert(changes, 0)
  end
end
for u in pairs(want) do
  redis.call('SADD', online, u)
  if redis.call('SADD', 'ts:where:' .. u, node) == 1 and redis.call('SCARD', 'ts:where:' .. u) == 1 then
    redis.call('SADD', 'ts:everyone', u)
    table.insert(changes, u)
    table.insert(changes, 1)
  end
end
return {announce(node, changes), changes}
`;

/** Takes one node's users off, adding those now offline everywhere to `changes`. */
const REMOVE_NODE = `
local function removenode(n, changes)
  for _, u in ipairs(redis.call('SMEMBERS', 'ts:online:' .. n)) do
    if redis.call('SREM', 'ts:where:' .. u, n) == 1 and redis.call('SCARD', 'ts:where:' .. u) == 0 then
      redis.call('SREM', 'ts:everyone', u)
      table.insert(changes, u)
      table.insert(changes, 0)
    end
  end
  redis.call('DEL', 'ts:online:' .. n, 'ts:node:' .. n)
  redis.call('SREM', 'ts:nodes', n)
end
`;

/**
 * ARGV: the reaping node. Every node whose heartbeat is gone is removed with
 * its users, announced by the reaper. Returns {first number, {user, 0, ...}, {nodes reaped}}.
 */
export const REAP = `${ANNOUNCE}${REMOVE_NODE}
local changes, dead = {}, {}
for _, n in ipairs(redis.call('SMEMBERS', 'ts:nodes')) do
  if redis.call('EXISTS', 'ts:node:' .. n) == 0 then
    removenode(n, changes)
    table.insert(dead, n)
  end
end
return {announce(ARGV[1], changes), changes, dead}
`;

/** ARGV: node. A node stopping (SIGTERM): its users off at once. Returns {first number, {user, 0, ...}}. */
export const DEPART = `${ANNOUNCE}${REMOVE_NODE}
local changes = {}
removenode(ARGV[1], changes)
return {announce(ARGV[1], changes), changes}
`;
