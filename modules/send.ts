import { CommandError, defineModule } from '../src/core/module-api.ts';

/**
 * `send,<user>,<command>[,args...]`: appends `send,<sender>,<command>,...`
 * to the user's inbox and `sent,<user>,<command>,...` (the carbon) to the
 * sender's, durably, then pushes them (DELIVERY.md). Version 1 connections
 * of the user get the first live, or after their next login.
 */
export default defineModule({
  description: 'direct messages',
  usage: { send: 'send,<user>,<command>[,args...] -> ok (the user gets send,<you>,<command>[,args...])' },
  pushes: ['send'],
  commands: {
    async send(ctx, args) {
      ctx.session.requireUser();
      // an empty <user> field is "no <user>" (PROTOCOL.md): syntax, not a lookup of a name nobody can have
      if (args.length < 2 || args[0] === '') throw new CommandError('syntax', 'usage: send,<user>,<command>[,args...]');
      const recipient = await ctx.server.users.find(args[0]!);
      if (recipient === null) throw new CommandError('user_not_found', `no user ${args[0]}`);
      await ctx.server.inbox.send(ctx, recipient, args.slice(1));
    },
  },
});
