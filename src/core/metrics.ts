/**
 * GATEWAYS.md section 4: what /metrics exposes. Hot-path numbers are plain
 * counters in the core, read when Prometheus scrapes; labels are bounded
 * (transport, loaded command names, error types), never a user name.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { ServerCore } from './server-core.ts';

function total(
  registry: Registry,
  name: string,
  help: string,
  read: () => number,
  labels?: { labelNames: string[]; values: () => [Record<string, string>, number][] },
): void {
  new Counter({
    name,
    help,
    registers: [registry],
    labelNames: labels?.labelNames ?? [],
    collect() {
      this.reset();
      if (labels === undefined) this.inc(read());
      else for (const [l, v] of labels.values()) this.inc(l, v);
    },
  });
}

const BUCKETS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5];
const DURATION = 'textserver_command_duration_seconds';

/** A histogram whose observations are counted outside prom-client (see createMetrics). */
function durationHistogram(durations: Map<string, { buckets: number[]; sum: number; count: number }>) {
  return {
    name: DURATION,
    help: 'Time from a request starting to its reply being queued',
    type: 'histogram',
    aggregator: 'sum',
    reset() {},
    get() {
      const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
      for (const [command, d] of durations) {
        let cumulative = 0;
        BUCKETS.forEach((le, i) => {
          cumulative += d.buckets[i]!;
          values.push({ metricName: `${DURATION}_bucket`, labels: { command, le }, value: cumulative });
        });
        values.push({ metricName: `${DURATION}_bucket`, labels: { command, le: '+Inf' }, value: d.count });
        values.push({ metricName: `${DURATION}_sum`, labels: { command }, value: d.sum });
        values.push({ metricName: `${DURATION}_count`, labels: { command }, value: d.count });
      }
      return { name: DURATION, help: 'Time from a request starting to its reply being queued', type: 'histogram', values, aggregator: 'sum' };
    },
  };
}

export function createMetrics(core: ServerCore): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: '' });
  // gauges named like counters fail `promtool check metrics`; the same numbers by type stay (nodejs_active_handles{type} ...)
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  new Gauge({
    name: 'textserver_connections',
    help: 'Open client connections by transport',
    labelNames: ['transport'],
    registers: [registry],
    collect() {
      this.reset();
      const counts = new Map<string, number>([
        ['tcp', 0],
        ['ws', 0],
      ]);
      for (const s of core.sessions) counts.set(s.transport, (counts.get(s.transport) ?? 0) + 1);
      for (const [transport, n] of counts) this.set({ transport }, n);
    },
  });
  new Gauge({
    name: 'textserver_open_sockets',
    help: 'Open sockets by listener, counted against the connection limits (TLS before its handshake, HTTP keep-alive, WebSocket)',
    labelNames: ['listener'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [listener, n] of core.sessions.sockets) this.set({ listener }, n);
    },
  });
  // Per-request work is a few additions into plain maps; prom-client reads them when scraped.
  const outcomes = new Map<string, Map<string, number>>();
  const durations = new Map<string, { buckets: number[]; sum: number; count: number }>();
  core.observer = (command, outcome, seconds) => {
    let byOutcome = outcomes.get(command);
    if (byOutcome === undefined) outcomes.set(command, (byOutcome = new Map()));
    byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);
    let d = durations.get(command);
    if (d === undefined) durations.set(command, (d = { buckets: BUCKETS.map(() => 0), sum: 0, count: 0 }));
    let i = 0;
    while (i < BUCKETS.length && seconds > BUCKETS[i]!) i++;
    if (i < BUCKETS.length) d.buckets[i]!++;
    d.sum += seconds;
    d.count++;
  };
  total(registry, 'textserver_commands_total', 'Requests by command and outcome (ok or the error type)', () => 0, {
    labelNames: ['command', 'outcome'],
    values: () => [...outcomes].flatMap(([command, m]) => [...m].map(([outcome, n]): [Record<string, string>, number] => [{ command, outcome }, n])),
  });
  registry.registerMetric(durationHistogram(durations) as never);
  const c = core.counters;
  total(registry, 'textserver_frames_total', 'Frames (or WebSocket messages) by direction', () => 0, {
    labelNames: ['direction'],
    values: () => [
      [{ direction: 'in' }, c.framesIn],
      [{ direction: 'out' }, c.framesOut],
    ],
  });
  total(registry, 'textserver_bytes_total', 'Bytes by direction', () => 0, {
    labelNames: ['direction'],
    values: () => [
      [{ direction: 'in' }, c.bytesIn],
      [{ direction: 'out' }, c.bytesOut],
    ],
  });
  total(
    registry,
    'textserver_pushes_total',
    'Pushes delivered to a connection, stored for a later login, or lost (their write failed and the store refused them)',
    () => 0,
    {
      labelNames: ['result'],
      values: () => [
        [{ result: 'delivered' }, core.hub.stats.pushed],
        [{ result: 'stored' }, core.hub.stats.stored],
        [{ result: 'lost' }, core.hub.stats.lost],
      ],
    },
  );
  total(
    registry,
    'textserver_connections_refused_total',
    'Sockets closed on arrival by --max-connections or --max-connections-per-ip',
    () => core.sessions.stats.refused,
  );
  total(registry, 'textserver_slow_consumer_disconnects_total', 'Connections cut for not reading', () => c.slowConsumers);
  total(registry, 'textserver_login_failures_total', 'Failed logins', () => core.users.stats.loginFailures);
  total(registry, 'textserver_login_throttled_total', 'Logins refused by throttling', () => core.users.stats.loginThrottled);
  new Gauge({
    name: 'textserver_argon2_queue_length',
    help: 'Password hashes waiting for a hashing slot',
    registers: [registry],
    collect() {
      this.set(core.users.hasher.queueLength);
    },
  });
  if (core.cluster !== undefined) clusterMetrics(registry, core.cluster);
  return registry;
}

/** With --bus only (a server alone exposes what it always did): this node's side of the cluster. */
function clusterMetrics(registry: Registry, cluster: NonNullable<ServerCore['cluster']>): void {
  const bus = cluster.bus;
  // CLUSTER.md: --node-id names the node in metrics (one series, its value always 1, as Prometheus *_info gauges do)
  new Gauge({ name: 'textserver_node_info', help: 'The node this is (--node-id)', labelNames: ['node'], registers: [registry] }).set({ node: bus.nodeId }, 1);
  total(
    registry,
    'textserver_bus_messages_total',
    'Bus messages this node published, dropped (Redis unreachable), received from other nodes, or could not decode',
    () => 0,
    {
      labelNames: ['result'],
      values: () => (['published', 'dropped', 'received', 'malformed'] as const).map((result) => [{ result }, bus.stats[result]]),
    },
  );
  total(
    registry,
    'textserver_bus_resubscriptions_total',
    "Times the bus subscriptions were made again (the inboxes of this node's users were re-read)",
    () => bus.stats.resubscribed,
  );
  new Gauge({
    name: 'textserver_bus_up',
    help: '1 while the bus (Redis) carries messages',
    registers: [registry],
    collect() {
      this.set(bus.up ? 1 : 0);
    },
  });
  new Gauge({
    name: 'textserver_bus_channels',
    help: "Bus channels this node subscribes (its users', their rooms', the cluster's)",
    registers: [registry],
    collect() {
      this.set(bus.channels);
    },
  });
  const presence = cluster.presence;
  if (presence === undefined) return;
  new Gauge({
    name: 'textserver_presence_local_users',
    help: 'Users with a connection on this node',
    registers: [registry],
    collect() {
      this.set(presence.localUsers);
    },
  });
  total(registry, 'textserver_presence_changes_total', 'Online/offline changes this node announced (made or reaped) and heard', () => 0, {
    labelNames: ['kind'],
    values: () => [
      [{ kind: 'announced' }, presence.stats.announced],
      [{ kind: 'heard' }, presence.stats.heard],
      [{ kind: 'caught_up' }, presence.stats.caughtUp],
    ],
  });
}
