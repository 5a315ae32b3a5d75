/** A throwaway self-signed certificate, made at test time (never committed). */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { tempDir } from './server.ts';

export function makeCertificate(): { cert: string; key: string; dir: string } {
  const dir = tempDir('textserver-tls-');
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ],
    { stdio: 'ignore' },
  );
  return { cert, key, dir };
}
