import { defineModule, expectArgs } from '../src/core/module-api.ts';

/**
 * `sync`: the connection becomes an inbox connection (DELIVERY.md section
 * 3): its logins are not followed by stored frames, and it gets the user's
 * inbox entries as `inbox,<seq>,<fields...>` once it sends `resume`.
 */
export default defineModule({
  description: 'inbox connections: every delivered frame and carbon, numbered, resumable',
  usage: { sync: 'sync -> ok (then login and resume,<epoch>,<after>)' },
  pushes: ['inbox'],
  commands: {
    sync(ctx, args) {
      expectArgs(args, 0, 'sync');
      ctx.server.inbox.sync(ctx.session);
    },
  },
});
