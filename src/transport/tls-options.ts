/**
 * TLS settings shared by every TLS listener (framed TCP, HTTPS, wss).
 */
import { readFileSync } from 'node:fs';
import type { TlsOptions } from 'node:tls';

/**
 * TLS 1.3 suites as node offers them, and on TLS 1.2 only forward-secret
 * AEAD suites (ECDHE with GCM or ChaCha20-Poly1305): no static RSA key
 * exchange, no CBC. The TLS 1.3 names must be listed too, or node turns
 * TLS 1.3 off when a cipher list is given.
 */
export const CIPHERS = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_128_GCM_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/**
 * Server options for `--tls-cert`/`--tls-key`. A handshake must complete
 * within the request timeout (a client that never sends its ClientHello is
 * cut then); the listener must destroy the socket on `tlsClientError`,
 * which node does not do itself when someone listens to that event.
 */
export function tlsServerOptions(files: { cert: string; key: string }, requestTimeoutMs: number): TlsOptions {
  return {
    cert: readFileSync(files.cert),
    key: readFileSync(files.key),
    minVersion: 'TLSv1.2',
    ciphers: CIPHERS,
    honorCipherOrder: true,
    handshakeTimeout: requestTimeoutMs,
  };
}
