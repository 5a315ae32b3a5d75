import { defineModule, expectArgs } from '../src/core/module-api.ts';

/**
 * `resume,<epoch>,<after>` (DELIVERY.md section 3): answers
 * `resumed,<epoch>,<head>`, then streams the inbox entries with seq > after
 * (`latest`: none of the past) and the live ones after them, in order, with
 * no gap and no repeat. Implies `sync`; `stream_reset` when the epoch is
 * another, or `<after>` is past the head or no longer retained.
 */
export default defineModule({
  description: 'resume an inbox stream after a position',
  usage: { resume: 'resume,<epoch>,<after> -> resumed,<epoch>,<head> (then inbox,<seq>,<fields...> for each entry after <after>)' },
  commands: {
    resume(ctx, args) {
      ctx.session.requireUser();
      expectArgs(args, 2, 'resume,<epoch>,<after>');
      return ctx.server.inbox.resume(ctx.session, args[0]!, args[1]!);
    },
  },
});
