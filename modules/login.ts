import { CommandError, defineModule } from '../src/core/module-api.ts';

/**
 * `login,<user>,<password>`: the connection becomes that user (even if it was
 * another); messages stored while they were offline follow the `ok`.
 */
export default defineModule({
  description: 'log in',
  usage: { login: 'login,<user>,<password> -> ok, then any stored messages' },
  commands: {
    async login(ctx, args) {
      if (args.length !== 2) throw new CommandError('syntax', 'usage: login,<user>,<password>');
      const user = await ctx.server.users.authenticate(args[0]!, args[1]!, ctx.session.remoteAddress);
      ctx.session.loginAs(user);
    },
  },
});
