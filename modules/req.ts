import { CommandError, defineModule, type CommandContext, type Reply } from '../src/core/module-api.ts';

/** Longest id, in characters (code points, PROTOCOL.md section 3). */
const MAX_ID = 64;

/**
 * `req,<id>,<command>[,args...]`: runs the inner command and tags its reply
 * (or error) with the id, so a client can match replies among pushes.
 * `req` inside `req` is refused: nesting bought nothing and made a request's
 * work grow with the square of its size (one level, one copy of the rest).
 */
export default defineModule({
  description: 'request ids',
  usage: { req: 'req,<id>,<command>[,args...] -> req,<id>[,<reply>]' },
  commands: {
    req(ctx: CommandContext, args: string[]) {
      const id = args[0];
      if (id === undefined || id === '' || !fitsId(id)) {
        throw new CommandError('syntax', `req needs an id of 1 to ${MAX_ID} characters`);
      }
      if (args.length < 2 || args[1] === '') throw wrap(id, new CommandError('syntax', 'req needs a command after the id'));
      if (args[1] === 'req') throw wrap(id, new CommandError('syntax', 'req cannot be nested'));
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

/** At most MAX_ID code points, counted without copying a long id (a surrogate pair is one character). */
function fitsId(id: string): boolean {
  if (id.length <= MAX_ID) return true;
  if (id.length > 2 * MAX_ID) return false;
  let chars = 0;
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < id.length) {
      const d = id.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    if (++chars > MAX_ID) return false;
  }
  return true;
}

function tag(id: string, reply: Reply): string[] {
  return reply === undefined ? ['req', id, 'ok'] : ['req', id, ...reply];
}

function wrap(id: string, err: CommandError): CommandError {
  err.prefix = ['req', id, ...err.prefix];
  return err;
}
