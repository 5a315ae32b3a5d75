/** The inbox bookkeeping and the protocol rules it relies on, without a server (pure logic). */
import { describe, expect, it } from 'vitest';
import { InboxStream } from '../../src/client/inbox.ts';
import { ClientProtocol } from '../../src/client/protocol.ts';

describe('InboxStream', () => {
  it('resumes a new device from nothing, adopts the epoch and moves with each new entry', () => {
    const s = new InboxStream();
    expect(s.resumeFields()).toEqual(['resume', '', '0']);
    expect(s.resumed(['resumed', 'Ep0ch123', '2'], 0)).toEqual({ epoch: 'Ep0ch123', head: 2, after: 0 });
    expect(s.accept(['inbox', '1', 'send', 'bob', 'msg', 'hi'])).toEqual({ seq: 1, fields: ['send', 'bob', 'msg', 'hi'], carbon: false });
    expect(s.accept(['inbox', '2', 'sent', 'bob', 'msg', 'yo'])).toEqual({ seq: 2, fields: ['sent', 'bob', 'msg', 'yo'], carbon: true });
    expect(s.position).toEqual({ epoch: 'Ep0ch123', seq: 2 });
    expect(s.resumeFields()).toEqual(['resume', 'Ep0ch123', '2']);
  });

  it('drops entries already processed and malformed frames', () => {
    const s = new InboxStream({ epoch: 'E', seq: 5 });
    expect(s.accept(['inbox', '5', 'send', 'bob', 'x'])).toBeUndefined();
    expect(s.accept(['inbox', '3', 'send', 'bob', 'x'])).toBeUndefined();
    expect(s.accept(['inbox', 'x', 'send'])).toBeUndefined();
    expect(s.accept(['inbox', '-1', 'send'])).toBeUndefined();
    expect(s.accept(['send', 'bob', 'x'])).toBeUndefined();
    expect(s.accept(['inbox', '6', 'send', 'bob', 'x'])?.seq).toBe(6);
    expect(s.accept(['inbox', '6', 'send', 'bob', 'x'])).toBeUndefined();
    expect(s.position.seq).toBe(6);
  });

  it('after latest counts the head as processed, without going back past entries already taken', () => {
    const s = new InboxStream({ epoch: 'old', seq: 900 });
    s.reset();
    expect(s.resumeFields('latest')).toEqual(['resume', '', 'latest']);
    s.resumed(['resumed', 'new', '40'], 'latest');
    expect(s.position).toEqual({ epoch: 'new', seq: 40 });
    expect(s.accept(['inbox', '40', 'send', 'a', 'x'])).toBeUndefined();
    expect(s.accept(['inbox', '41', 'send', 'a', 'x'])?.seq).toBe(41);
    s.resumed(['resumed', 'new', '40'], 'latest');
    expect(s.position.seq).toBe(41);
  });

  it('refuses a reply that is not resumed', () => {
    expect(() => new InboxStream().resumed(['ok'], 0)).toThrow(/not a resumed reply/);
    expect(() => new InboxStream().resumed(['resumed', 'e', 'x'], 0)).toThrow(/not a resumed reply/);
  });
});

describe('ClientProtocol and the inbox', () => {
  it('takes inbox frames for pushes even while a call is outstanding and the server did not list the word', async () => {
    const pushes: string[][] = [];
    const p = new ClientProtocol(() => {}, { push: (f) => pushes.push(f), serverError: () => {} }, { words: ['send'] });
    const reply = p.call('send', 'me', 'x');
    p.receive('inbox,1,sent,me,x');
    p.receive('inbox,2,send,me,x');
    p.receive('ok');
    expect(await reply).toEqual(['ok']);
    expect(pushes).toEqual([
      ['inbox', '1', 'sent', 'me', 'x'],
      ['inbox', '2', 'send', 'me', 'x'],
    ]);
  });

  it('shows a request its reply before the frames behind it are handled', async () => {
    const order: string[] = [];
    const sent: string[] = [];
    const p = new ClientProtocol((s) => sent.push(s), { push: (f) => order.push(`push ${f[1]}`), serverError: () => {} }, { words: [] });
    const reply = p.requestSeen(['resume', '', '0'], (f) => order.push(`seen ${f.join(',')}`));
    const id = sent[0]!.split(',')[1]!;
    p.receive(`req,${id},resumed,E,1`);
    p.receive('inbox,1,send,a,x');
    expect(order).toEqual(['seen resumed,E,1', 'push 1']);
    expect(await reply).toEqual(['resumed', 'E', '1']);
    // an error is not seen, it rejects
    const failing = p.requestSeen(['resume', 'E', '9'], () => order.push('seen error'));
    p.receive(`req,${sent[1]!.split(',')[1]},error,nonfatal,stream_reset`);
    await expect(failing).rejects.toMatchObject({ type: 'stream_reset' });
    expect(order).toHaveLength(2);
  });
});
