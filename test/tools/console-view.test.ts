import { describe, expect, it } from 'vitest';
import { COLOR, PLAIN, complete, describeReply, pickStyle, printAbove, promptFor } from '../../tools/console-view.ts';

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
});
