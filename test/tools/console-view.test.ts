import { describe, expect, it } from 'vitest';
import {
  COLOR,
  PLAIN,
  STREAM_RESET_HINT,
  complete,
  describePush,
  describeReply,
  localTime,
  pickStyle,
  printAbove,
  promptFor,
} from '../../tools/console-view.ts';
import { forms, hintFor, requestSyntax, typedFields } from '../../tools/console-hints.ts';

describe('console view', () => {
  it('prints a push above the typed line and redraws it', () => {
    expect(printAbove('send,bob,hi', 'h:1> ', 'send,al')).toBe('\r\x1b[2Ksend,bob,hi\nh:1> send,al');
  });

  it('shows host, port and user in the prompt', () => {
    expect(promptFor('127.0.0.1', 7878, undefined, true)).toBe('127.0.0.1:7878> ');
    expect(promptFor('127.0.0.1', 7878, 'alice', true)).toBe('127.0.0.1:7878 alice> ');
    expect(promptFor('h', 1, 'alice', false)).toBe('h:1 (disconnected)> ');
  });

  it('prints errors distinctly, with type and info, in colour only when allowed', () => {
    expect(describeReply(['error', 'nonfatal', 'name_taken', 'that name is taken'], PLAIN)).toBe('error name_taken: that name is taken');
    expect(describeReply(['error', 'fatal', 'timeout'], PLAIN)).toBe('error (fatal) timeout');
    expect(describeReply(['error', 'nonfatal', 'syntax', 'x'], COLOR)).toBe('\x1b[31merror syntax: x\x1b[0m');
    expect(describeReply(['req', '3', 'error', 'nonfatal', 'syntax', 'x'], PLAIN)).toBe('req 3: error syntax: x');
    expect(describeReply(['send', 'bob', 'a,b'], PLAIN)).toBe('send,bob,a\\,b');
    expect(describeReply([], PLAIN)).toBe('(empty frame)');
    expect(pickStyle(true, {})).toBe(COLOR);
    expect(pickStyle(true, { NO_COLOR: '1' })).toBe(PLAIN);
    expect(pickStyle(false, {})).toBe(PLAIN);
  });

  it('completes command names and console commands', () => {
    expect(complete('lo', ['login', 'logout', 'nop'])).toEqual([['login', 'logout'], 'lo']);
    expect(complete(':r', [])).toEqual([[':raw', ':req on', ':req off'], ':r']);
    expect(complete('send,b', ['send'])).toEqual([[], 'send,b']);
  });

  it('completes command names after help too', () => {
    expect(complete('help se', ['send', 'say', 'search'])).toEqual([['help send', 'help search'], 'help se']);
  });

  it('shows history replies as one readable line per message, with local times', () => {
    const t = Date.UTC(2026, 0, 2, 3, 4, 5);
    const d = new Date(t);
    expect(localTime(t)).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(localTime(t).slice(11, 13)).toBe(String(d.getHours()).padStart(2, '0'));
    expect(describeReply(['history', 'lobby', '2', '7', String(t), 'alice', 'hi, all', '8', String(t), 'bob', 'yo'], PLAIN).split('\n')).toEqual([
      'history of lobby: 2 messages',
      `  #7 ${localTime(t)} alice: hi, all`,
      `  #8 ${localTime(t)} bob: yo`,
    ]);
    expect(describeReply(['req', 'c1', 'history', 'lobby', '0'], PLAIN)).toBe('req c1: history of lobby: 0 messages');
  });

  it('shows a help reply as its usage and reply', () => {
    expect(describeReply(['help', 'say', 'say,<room>,<text> -> said,<room>,<id>,<time>'], PLAIN)).toBe(
      'usage: say,<room>,<text>\nreply: said,<room>,<id>,<time>',
    );
    expect(describeReply(['help', 'x'], PLAIN)).toBe('x: no usage declared');
  });
});

describe('argument hints', () => {
  const usages = new Map([
    ['say', 'say,<room>,<text> -> said,<room>,<id>,<time>'],
    ['send', 'send,<user>,<command>[,args...] -> ok'],
    ['typing', 'typing,<room>,start|stop -> ok'],
    ['history', 'history,<room>,last,<n> | since,<time> | after,<id> | before,<id>,<n> | between,<from>,<to> -> history,...'],
    ['whoami', 'whoami -> user,<name>'],
  ]);

  it('splits usages and typed lines', () => {
    expect(requestSyntax('say,<room>,<text> -> said')).toBe('say,<room>,<text>');
    expect(typedFields('send,bob,a\\,b,')).toEqual(['send', 'bob', 'a\\,b', '']);
    expect(forms('history,<room>,last,<n> | before,<id>,<n>')).toEqual([
      ['history', '<room>', 'last', '<n>'],
      ['history', '<room>', 'before', '<id>', '<n>'],
    ]);
  });

  it('hints the arguments still to come', () => {
    expect(hintFor('say', usages)).toBe(',<room>,<text>');
    expect(hintFor('say,', usages)).toBe('<room>,<text>');
    expect(hintFor('say,lob', usages)).toBe(',<text>');
    expect(hintFor('say,lobby,', usages)).toBe('<text>');
    expect(hintFor('say,lobby,hi', usages)).toBe('');
    expect(hintFor('send,bob,', usages)).toBe('<command>[,args...]');
    expect(hintFor('send,bob,msg,', usages)).toBe('');
    expect(hintFor('typing,lobby,', usages)).toBe('start|stop');
    expect(hintFor('whoami', usages)).toBe('');
    expect(hintFor('sa', usages)).toBe('');
    expect(hintFor(':raw', usages)).toBe('');
    expect(hintFor('req,1,say,', usages)).toBe('<room>,<text>');
  });

  it('offers the alternatives where a usage branches, then follows the one typed', () => {
    expect(hintFor('history,lobby,', usages)).toBe('last|since|after|before|between');
    expect(hintFor('history,lobby,be', usages)).toBe(',<id>|<from>');
    expect(hintFor('history,lobby,before,', usages)).toBe('<id>,<n>');
    expect(hintFor('history,lobby,since,1', usages)).toBe('');
  });
});

describe('inbox frames in the console', () => {
  it('shows messages, carbons and other entries readably, with their seq', () => {
    expect(describePush(['inbox', '12', 'send', 'alice', 'msg', 'hello'], PLAIN)).toBe('#12 alice → you: hello');
    expect(describePush(['inbox', '13', 'sent', 'bob', 'msg', 'hi, there'], PLAIN)).toBe('#13 you → bob: hi, there');
    expect(describePush(['inbox', '14', 'send', 'alice', 'ping', '1', '2'], PLAIN)).toBe('#14 alice → you: ping, 1, 2');
    expect(describePush(['inbox', '15', 'friend', 'added', 'bob'], PLAIN)).toBe('#15 friend,added,bob');
    expect(describePush(['inbox', '16', 'send', 'alice'], PLAIN)).toBe('#16 send,alice');
    expect(describePush(['inbox', '12', 'send', 'alice', 'msg', 'hello'], COLOR)).toBe('\x1b[2m#12\x1b[0m \x1b[36malice → you: hello\x1b[0m');
    // a frame that is not an entry stays as on the wire
    expect(describePush(['inbox'], PLAIN)).toBe('inbox');
  });

  it('shows resumed replies and says what to do about a stream_reset', () => {
    expect(describeReply(['resumed', 'Ab3dE6gh', '42'], PLAIN)).toBe('resumed: epoch Ab3dE6gh, head #42');
    expect(describeReply(['req', '7', 'resumed', 'Ab3dE6gh', '0'], PLAIN)).toBe('req 7: resumed: epoch Ab3dE6gh, head #0');
    expect(describeReply(['error', 'nonfatal', 'stream_reset', 'epoch changed'], PLAIN).split('\n')).toEqual([
      'error stream_reset: epoch changed',
      STREAM_RESET_HINT,
    ]);
    expect(describeReply(['req', '8', 'error', 'nonfatal', 'stream_reset'], PLAIN)).toBe(`req 8: error stream_reset\n${STREAM_RESET_HINT}`);
  });
});
