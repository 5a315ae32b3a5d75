/**
 * Whether this tree's server has the inbox (DELIVERY.md): inbox tests are
 * skipped only while it lacks `resume`, and start running once it has it.
 */
import { removeDir, startServer } from '../helpers/server.ts';
import { serverHasCommand, serverHasResume } from '../../tools/check-delivery.ts';

async function withServer<T>(fn: (port: number) => Promise<T>): Promise<T> {
  const srv = await startServer();
  try {
    return await fn(srv.port);
  } finally {
    await srv.stop();
    removeDir(srv.data);
  }
}

export function inboxSupported(): Promise<boolean> {
  return withServer(serverHasResume);
}

/** `once` may come after `resume`: its tests wait for it. */
export function onceSupported(): Promise<boolean> {
  return withServer((port) => serverHasCommand(port, 'once'));
}
