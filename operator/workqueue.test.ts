import { describe, expect, it } from 'vitest';
import { WorkQueue } from './workqueue.ts';

describe('WorkQueue', () => {
  it('dedupes queued keys and never hands one key to two workers', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('a');
    q.add('b');
    expect(q.length).toBe(2);
    expect(await q.get()).toBe('a');
    q.add('a'); // while processing: queued again only when done
    expect(q.length).toBe(1);
    expect(await q.get()).toBe('b');
    q.done('a');
    expect(await q.get()).toBe('a');
    q.done('a');
    q.done('b');
    expect(q.idle).toBe(true);
  });

  it('backs off exponentially per key and resets on forget', () => {
    const q = new WorkQueue({ baseMs: 100, maxMs: 1000 });
    expect([q.addRateLimited('k'), q.addRateLimited('k'), q.addRateLimited('k'), q.addRateLimited('k'), q.addRateLimited('k')]).toEqual([100, 200, 400, 800, 1000]);
    q.forget('k');
    expect(q.addRateLimited('k')).toBe(100);
    q.shutDown();
  });

  it('delayed adds arrive later; shutDown releases waiting workers', async () => {
    const q = new WorkQueue();
    q.addAfter('x', 30);
    expect(q.length).toBe(0);
    const t0 = Date.now();
    expect(await q.get()).toBe('x');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
    const waiting = q.get();
    q.shutDown();
    expect(await waiting).toBeUndefined();
  });
});
