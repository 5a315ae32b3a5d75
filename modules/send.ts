import { CommandError, defineModule } from '../src/core/module-api.ts';

/**
 * `send,<user>,<command>[,args...]`: delivers `send,<sender>,<command>,...`
 * to every connection of the user, or stores it durably for their next login.
 */
export default defineModule({
  description: 'direct messages',
  usage: { send: 'send,<user>,<command>[,args...] -> ok (the user gets send,<you>,<command>[,args...])' },
  pushes: ['send'],
  commands: {
    async send(ctx, args) {
      const sender = ctx.session.requireUser();
      if (args.length < 2) throw new CommandError('syntax', 'usage: send,<user>,<command>[,args...]');
      const recipient = await ctx.server.users.find(args[0]!);
      if (recipient === null) throw new CommandError('user_not_found', `no user ${args[0]}`);
      args[0] = sender.name;
      args.unshift('send');
      await ctx.server.hub.deliver(recipient, args);
    },
  },
});
