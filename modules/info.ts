/**
 * Version and help (MODULES.md, info): what KFCR's version routes tell, for
 * consoles and client libraries. No login needed.
 */
import { CommandError, defineModule, expectArgs } from '../src/core/module-api.ts';

export default defineModule({
  description: 'server version, loaded commands and modules, usages, push words',
  usage: {
    version: 'version -> version,<server version>,<protocol version>',
    commands: 'commands -> commands[,<name>...]',
    modules: 'modules -> modules[,<name>...]',
    help: 'help,<command> -> help,<command>[,<usage>]',
    pushes: 'pushes -> pushes[,<word>...][,,<command>...]',
  },
  commands: {
    version(ctx, args) {
      expectArgs(args, 0, 'version');
      return ['version', ctx.server.version, String(ctx.server.protocolVersion)];
    },
    commands(ctx, args) {
      expectArgs(args, 0, 'commands');
      return ['commands', ...ctx.server.commands()];
    },
    modules(ctx, args) {
      expectArgs(args, 0, 'modules');
      return ['modules', ...ctx.server.modules()];
    },
    /** The usage the command's module declares; no third field when it declares none. */
    help(ctx, args) {
      expectArgs(args, 1, 'help,<command>');
      const command = args[0]!;
      const owner = ctx.server.definitions().find((m) => m.commands.includes(command));
      if (owner === undefined) {
        throw new CommandError('command_not_found', `no command ${JSON.stringify(command.length > 64 ? `${command.slice(0, 64)}...` : command)}`);
      }
      const usage = owner.def.usage?.[command];
      return typeof usage === 'string' && usage !== '' ? ['help', command, usage] : ['help', command];
    },
    /**
     * The words that start a push, sorted; then, after an empty field, the
     * commands whose reply starts with their own name although it is a push
     * word. Client libraries ask once at connect.
     */
    pushes(ctx, args) {
      expectArgs(args, 0, 'pushes');
      const words = new Set<string>();
      const replies = new Set<string>();
      for (const { def } of ctx.server.definitions()) {
        // plain JavaScript modules are not type-checked: keep only non-empty strings
        for (const w of Array.isArray(def.pushes) ? def.pushes : []) if (typeof w === 'string' && w !== '') words.add(w);
        for (const c of Array.isArray(def.repliesLikePushes) ? def.repliesLikePushes : []) if (typeof c === 'string' && c !== '') replies.add(c);
      }
      const reply = ['pushes', ...[...words].sort()];
      if (replies.size > 0) reply.push('', ...[...replies].sort());
      return reply;
    },
  },
});
