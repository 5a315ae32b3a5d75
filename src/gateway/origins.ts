/**
 * Which browser origins may open the WebSocket (GATEWAYS.md section 1).
 * The default is the HTTP gateway's own origins, built from the configured
 * `--host` and the ports that serve pages, never from the request's `Host`
 * header: a DNS-rebinding page (`http://evil.example:PORT`, resolving to
 * this server) sends a matching `Host` and must still fail.
 */
import { hostname, networkInterfaces } from 'node:os';

const LOOPBACK = ['localhost', '127.0.0.1', '[::1]'];

function hostsFor(host: string): string[] {
  const bracket = (h: string) => (h.includes(':') && !h.startsWith('[') ? `[${h}]` : h);
  if (host === '' || host === '0.0.0.0' || host === '::') {
    // every name and address this machine answers on
    const addresses = Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address.split('%')[0]!));
    return [...LOOPBACK, hostname(), ...addresses].map(bracket);
  }
  if (host === 'localhost' || host === '::1' || host.startsWith('127.')) return [...new Set([...LOOPBACK, bracket(host)])];
  return [bracket(host)];
}

/** The normalised origin (`scheme://host[:port]`, default port dropped), or undefined when it is not a URL origin. */
export function normaliseOrigin(origin: string): string | undefined {
  try {
    const url = new URL(origin);
    return url.origin === 'null' ? undefined : url.origin;
  } catch {
    return undefined;
  }
}

/**
 * A predicate on a request's `Origin` header. No header (not a browser) is
 * always allowed; `configured` (`--ws-origins`) replaces the default, `*`
 * allowing every origin.
 */
export function originPolicy(
  configured: readonly string[],
  host: string,
  tls: boolean,
  pagePorts: () => readonly number[],
): (origin: string | undefined) => boolean {
  if (configured.includes('*')) return () => true;
  const listed = new Set(configured.map((o) => normaliseOrigin(o) ?? o));
  let own: { ports: string; origins: Set<string> } | undefined;
  const ownOrigins = (): Set<string> => {
    const ports = pagePorts();
    // built once the listeners know their ports (0 picks one)
    if (own === undefined || own.ports !== ports.join()) {
      const scheme = tls ? 'https' : 'http';
      const origins = ports.flatMap((port) => hostsFor(host).map((h) => normaliseOrigin(`${scheme}://${h}:${port}`)));
      own = { ports: ports.join(), origins: new Set(origins.filter((o): o is string => o !== undefined)) };
    }
    return own.origins;
  };
  return (origin) => {
    if (origin === undefined) return true;
    const normal = normaliseOrigin(origin);
    if (configured.length > 0) return listed.has(origin) || (normal !== undefined && listed.has(normal));
    return normal !== undefined && ownOrigins().has(normal);
  };
}
