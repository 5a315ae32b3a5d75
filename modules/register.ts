import { CommandError, defineModule } from '../src/core/module-api.ts';

/** `register,<user>,<password>`: `ok` once the account is committed; the connection stays as it was. */
export default defineModule({
  description: 'create an account',
  usage: { register: 'register,<user>,<password> -> ok' },
  commands: {
    async register(ctx, args) {
      if (args.length !== 2) throw new CommandError('syntax', 'usage: register,<user>,<password>');
      await ctx.server.users.register(args[0]!, args[1]!, ctx.session.remoteAddress);
    },
  },
});
