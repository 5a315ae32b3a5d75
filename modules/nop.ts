import { defineModule } from '../src/core/module-api.ts';

const EMPTY: readonly string[] = Object.freeze([]);

/** `nop[,anything...]`: answered with an empty frame (PROTOCOL.md section 3). */
export default defineModule({
  description: 'keepalive round trip',
  usage: { nop: 'nop[,anything] -> empty frame' },
  commands: {
    nop: () => EMPTY,
  },
});
