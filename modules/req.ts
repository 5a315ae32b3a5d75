import { CommandError, defineModule, type CommandContext, type Reply } from '../src/core/module-api.ts';

const MAX_ID = 64;

/**
 * `req,<id>,<command>[,args...]`: runs the inner command and tags its reply
 * (or error) with the id, so a client can match replies among pushes.
 */
export default defineModule({
  description: 'request ids',
  usage: { req: 'req,<id>,<command>[,args...] -> req,<id>[,<reply>]' },
  commands: {
    req(ctx: CommandContext, args: string[]) {
      const id = args[0];
      if (id === undefined || id === '' || id.length > MAX_ID) {
        throw new CommandError('syntax', `req needs an id of 1 to ${MAX_ID} characters`);
      }
      if (args.length < 2 || args[1] === '') throw wrap(id, new CommandError('syntax', 'req needs a command after the id'));
      let result: Reply | Promise<Reply>;
      try {
        result = ctx.server.invoke(ctx, args.slice(1));
      } catch (err) {
        throw wrap(id, err as CommandError);
      }
      if (result instanceof Promise) {
        return result.then(
          (reply) => tag(id, reply),
          (err: CommandError) => Promise.reject(wrap(id, err)),
        );
      }
      return tag(id, result);
    },
  },
});

function tag(id: string, reply: Reply): string[] {
  return reply === undefined ? ['req', id, 'ok'] : ['req', id, ...reply];
}

function wrap(id: string, err: CommandError): CommandError {
  err.prefix = ['req', id, ...err.prefix];
  return err;
}
