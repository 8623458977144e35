import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DirectoryStore } from './store.ts';
import { describeRecordStoreContract } from './testing/record-store-contract.ts';

describe('DirectoryStore', () => {
  const base = mkdtempSync(join(tmpdir(), 'vhba-store-'));
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  describe('RecordStore contract', () => describeRecordStoreContract((label) => DirectoryStore.open(join(base, 'contract', label))));

  it('keeps records across a reopen (a controller restart)', async () => {
    const dir = join(base, 'a');
    const s1 = await DirectoryStore.open<{ id: string; n: number }>(dir);
    await s1.put({ id: 'vol-2', n: 2 });
    await s1.put({ id: 'vol-1', n: 1 });
    await s1.put({ id: 'vol-1', n: 11 });
    await s1.delete('vol-2');
    await s1.delete('absent');
    const s2 = await DirectoryStore.open<{ id: string; n: number }>(dir);
    expect(await s2.list()).toEqual([{ id: 'vol-1', n: 11 }]);
    expect(readdirSync(dir)).toEqual([DirectoryStore.fileName('vol-1')]);
  });

  it('names files by hash so ids never become paths', async () => {
    const dir = join(base, 'b');
    const s = await DirectoryStore.open<{ id: string }>(dir);
    await s.put({ id: '../../etc/passwd' });
    expect(readdirSync(dir)).toEqual([expect.stringMatching(/^[0-9a-f]{64}\.json$/)]);
    expect(await s.get('../../etc/passwd')).toEqual({ id: '../../etc/passwd' });
  });

  it('removes temp files a crash left and refuses unreadable records', async () => {
    const dir = join(base, 'c');
    const s = await DirectoryStore.open<{ id: string }>(dir);
    await s.put({ id: 'x' });
    writeFileSync(join(dir, `${DirectoryStore.fileName('y')}.tmp-abc`), '{"id":');
    await DirectoryStore.open(dir);
    expect(readdirSync(dir)).toEqual([DirectoryStore.fileName('x')]);
    writeFileSync(join(dir, DirectoryStore.fileName('x')), '{broken');
    await expect(DirectoryStore.open(dir)).rejects.toThrow(/unreadable/);
  });
});
