import pino, { type Logger } from 'pino';

/**
 * pino JSON lines on stdout. Fields that could carry secrets are redacted
 * as a second line of defence: no code path logs them on purpose.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: ['password', 'hash', 'token', '*.password', '*.hash', '*.token'], censor: '[redacted]' },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
