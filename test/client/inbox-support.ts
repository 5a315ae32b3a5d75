/**
 * Whether this tree's server has the inbox (DELIVERY.md): inbox tests are
 * skipped only while it lacks `resume`, and start running once it has it.
 */
import { removeDir, startServer } from '../helpers/server.ts';
import { serverHasResume } from '../../tools/check-delivery.ts';

export async function inboxSupported(): Promise<boolean> {
  const srv = await startServer();
  try {
    return await serverHasResume(srv.port);
  } finally {
    await srv.stop();
    removeDir(srv.data);
  }
}
