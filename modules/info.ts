/** Version and help (MODULES.md, info): what KFCR's version routes tell, for consoles. No login needed. */
import { defineModule, expectArgs } from '../src/core/module-api.ts';

export default defineModule({
  description: 'server version, loaded commands and modules',
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
  },
});
