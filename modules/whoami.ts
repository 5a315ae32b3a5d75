import { defineModule } from '../src/core/module-api.ts';

/** `whoami`: `user,<name>` as registered. */
export default defineModule({
  description: 'who this connection is',
  usage: { whoami: 'whoami -> user,<name>' },
  commands: {
    whoami: (ctx) => ['user', ctx.session.requireUser().name],
  },
});
