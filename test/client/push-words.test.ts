/**
 * Push words come from the modules: the info module's `pushes` and `help`,
 * and the client library learning them at connect.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { connect } from '../../src/client/client.ts';
import { ClientProtocol, DEFAULT_PUSH_WORDS, parsePushWords } from '../../src/client/protocol.ts';

let srv: TestServer;
let custom: TestServer;
const dirs: string[] = [];

/** A module the client library cannot know: it pushes `shout` to the caller, then answers `shouted`. */
const SHOUT_MODULE = `export default {
  pushes: ['shout'],
  usage: { shout: 'shout,<text> -> shouted' },
  commands: { shout: (ctx, args) => { ctx.session.push(['shout', ...args]); return ['shouted']; } },
};
`;

beforeAll(async () => {
  srv = await startServer();
  const dir = tempDir();
  dirs.push(dir);
  const modules = join(dir, 'modules');
  mkdirSync(modules);
  // the shipped modules by their real path, so they share the server's module-api
  for (const name of ['nop', 'req', 'info']) {
    writeFileSync(join(modules, `${name}.js`), `export { default } from '${pathToFileURL(join(ROOT, 'modules', `${name}.ts`)).href}';\n`);
  }
  writeFileSync(join(modules, 'shout.js'), SHOUT_MODULE);
  writeFileSync(join(dir, 'modules.txt'), 'nop\nreq\ninfo\nshout\n');
  custom = await startServer(['--modules-dir', modules, '--modules-list', join(dir, 'modules.txt')], join(dir, 'data'));
});

afterAll(async () => {
  await srv.stop();
  await custom.stop();
  removeDir(srv.data);
  for (const d of dirs) removeDir(d);
});

describe('the info module', () => {
  it('lists the words the loaded modules push, then the commands that answer like a push', async () => {
    const c = await connect({ port: srv.port });
    expect(await c.call('pushes')).toEqual(['pushes', 'friend', 'inbox', 'presence', 'room', 'send', '', 'presence']);
    const d = await connect({ port: custom.port });
    expect(await d.call('pushes')).toEqual(['pushes', 'shout']);
    await c.close();
    await d.close();
  });

  it('answers help,<command> with the usage its module declares', async () => {
    const c = await connect({ port: srv.port });
    expect(await c.call('help', 'say')).toEqual(['help', 'say', 'say,<room>,<text> -> said,<room>,<id>,<time>']);
    expect(await c.call('help', 'help')).toEqual(['help', 'help', 'help,<command> -> help,<command>[,<usage>]']);
    await expect(c.call('help', 'nosuch')).rejects.toMatchObject({ type: 'command_not_found' });
    await expect(c.call('help')).rejects.toMatchObject({ type: 'syntax' });
    const d = await connect({ port: custom.port });
    expect(await d.call('help', 'nop')).toEqual(['help', 'nop', 'nop[,anything] -> empty frame']);
    await c.close();
    await d.close();
  });

  it('declares a usage for every command of the shipped modules', async () => {
    const c = await connect({ port: srv.port });
    const commands = (await c.call('commands')).slice(1);
    const undeclared = [];
    for (const command of commands) if ((await c.call('help', command)).length < 3) undeclared.push(command);
    expect(undeclared).toEqual([]);
    await c.close();
  });
});

describe('the client library learns push words at connect', () => {
  it('takes a push word only a loaded module knows for a push, not for the reply to an outstanding call', async () => {
    const c = await connect({ port: custom.port });
    const pushes: string[][] = [];
    const replies: string[][] = [];
    c.on('push', (f) => pushes.push(f));
    c.on('reply', (f) => replies.push(f));
    expect(await c.call('shout', 'hey')).toEqual(['shouted']);
    expect(pushes).toEqual([['shout', 'hey']]);
    expect(c.pushWords).toEqual({ words: ['shout'], repliesLikePushes: [] });
    // the library's own look-up is not reported as a reply
    expect(replies).toEqual([['shouted']]);
    await c.close();
  });

  it('keeps telling a presence reply from a presence push', async () => {
    const c = await connect({ port: srv.port });
    await c.call('register', 'pw_a', 'password1');
    await c.login('pw_a', 'password1');
    expect(await c.call('presence', 'pw_a')).toEqual(['presence', 'pw_a', 'online']);
    expect(c.pushWords.repliesLikePushes).toEqual(['presence']);
    await c.close();
  });

  it('uses fixed push words when given, without asking', async () => {
    const c = await connect({ port: custom.port, pushWords: { words: ['shout'] } });
    const sent: string[] = [];
    c.on('frame', (dir, frame) => dir === 'out' && sent.push(frame.subarray(5).toString()));
    expect(await c.call('nop')).toEqual([]);
    expect(sent).toEqual(['nop']);
    await c.close();
  });
});

describe('ClientProtocol.learnPushWords', () => {
  it('switches to the learned words once answered, and keeps the defaults when the server does not know pushes', async () => {
    const sent: string[] = [];
    const pushes: string[][] = [];
    const replies: string[][] = [];
    const p = new ClientProtocol((s) => sent.push(s), { push: (f) => pushes.push(f), serverError: () => {}, reply: (f) => replies.push(f) });
    const learned = p.learnPushWords();
    expect(sent).toEqual(['req,~1,pushes']);
    expect(p.isInternal('req,~1,pushes,zap')).toBe(true);
    p.receive('req,~1,pushes,zap,,zap');
    await learned;
    expect(p.isInternal('req,~1,pushes,zap')).toBe(false);
    const call = p.call('nop');
    p.receive('room,x,joined,u'); // no longer a push word here: the reply to nop
    p.receive('zap,1');
    expect(await call).toEqual(['room', 'x', 'joined', 'u']);
    expect(pushes).toEqual([['zap', '1']]);
    expect(replies).toEqual([['room', 'x', 'joined', 'u']]);
    const zap = p.call('zap');
    p.receive('zap,2');
    expect(await zap).toEqual(['zap', '2']);

    const q = new ClientProtocol(() => {}, { push: () => {}, serverError: () => {} });
    const old = q.learnPushWords();
    q.receive('req,~1,error,nonfatal,command_not_found,no command "pushes"');
    await old;
    expect(q.pushWords.words).toEqual(DEFAULT_PUSH_WORDS);
  });

  it('takes every frame before the answer for a push (no reply to a later request can come first)', async () => {
    const pushes: string[][] = [];
    const p = new ClientProtocol(() => {}, { push: (f) => pushes.push(f), serverError: () => {} });
    const learned = p.learnPushWords();
    const call = p.call('nop');
    p.receive('shout,early'); // a word the defaults do not know: still not the reply to nop
    p.receive('req,~1,pushes,shout');
    p.receive('');
    await learned;
    expect(await call).toEqual([]);
    expect(pushes).toEqual([['shout', 'early']]);
  });

  it('stops waiting, keeping the defaults, when the look-up gets an untagged answer', async () => {
    // no req module: the look-up is answered with an untagged error, which is not the reply to a later call
    const p = new ClientProtocol(() => {}, { push: () => {}, serverError: () => {} });
    const learned = p.learnPushWords();
    const call = p.call('nop');
    p.receive('error,nonfatal,command_not_found,no command "req"');
    p.receive('');
    await learned;
    expect(await call).toEqual([]);
    expect(p.pushWords.words).toEqual(DEFAULT_PUSH_WORDS);
    // a peer that answers everything with an empty frame
    const q = new ClientProtocol(() => {}, { push: () => {}, serverError: () => {} });
    const done = q.learnPushWords();
    const nop = q.call('nop');
    q.receive('');
    q.receive('');
    await done;
    expect(await nop).toEqual([]);
  });

  it('parses the pushes reply', () => {
    expect(parsePushWords(['pushes'])).toEqual({ words: [] });
    expect(parsePushWords(['pushes', 'a', 'b', '', 'b'])).toEqual({ words: ['a', 'b'], repliesLikePushes: ['b'] });
  });
});
