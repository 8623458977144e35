// The behaviour every RecordStore (csi/store.ts) promises, as vitest cases:
// run by csi/store.test.ts against DirectoryStore and by
// test/e2e/csi-kube-store.test.ts against KubernetesStore on a real API server.
import { expect, it } from 'vitest';
import type { RecordStore } from '../store.ts';

/** The record the contract stores. */
export interface ContractRecord { id: string; n: number; tags?: string[] }

/** Opens a store over the backing storage named `label`; opening the same
 * label again is a restart (a new instance over the same state). */
export type OpenRecordStore = (label: string) => Promise<RecordStore<ContractRecord>>;

/** Registers the contract's cases in the current describe block. */
export function describeRecordStoreContract(open: OpenRecordStore): void {
  it('creates, replaces, deletes (absent is OK) and keeps records across a restart', async () => {
    const s1 = await open('restart');
    await s1.put({ id: 'vol-2', n: 2 });
    await s1.put({ id: 'vol-1', n: 1 });
    await s1.put({ id: 'vol-1', n: 11 });
    expect(await s1.get('vol-2')).toEqual({ id: 'vol-2', n: 2 });
    await s1.delete('vol-2');
    await s1.delete('absent');
    expect(await s1.get('vol-2')).toBeUndefined();
    const s2 = await open('restart');
    expect(await s2.list()).toEqual([{ id: 'vol-1', n: 11 }]);
    expect(await s2.get('vol-1')).toEqual({ id: 'vol-1', n: 11 });
  });

  it('lists sorted by id and keeps hostile ids as data', async () => {
    const s = await open('ids');
    const ids = ['z', '../../etc/passwd', 'a/b', 'A', 'ünïcode', 'x'.repeat(300)];
    for (const [n, id] of ids.entries()) await s.put({ id, n });
    const listed = await s.list();
    expect(listed.map((r) => r.id)).toEqual([...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    expect(await s.get('../../etc/passwd')).toEqual({ id: '../../etc/passwd', n: 1 });
    expect(await s.get('../../etc')).toBeUndefined();
  });

  it('hands out copies: changing a returned or stored object changes nothing', async () => {
    const s = await open('copies');
    const rec: ContractRecord = { id: 'c', n: 1, tags: ['t'] };
    await s.put(rec);
    rec.tags!.push('changed-after-put');
    const got = await s.get('c');
    got!.tags!.push('changed-after-get');
    (await s.list())[0]!.n = 99;
    expect(await s.get('c')).toEqual({ id: 'c', n: 1, tags: ['t'] });
  });
}
