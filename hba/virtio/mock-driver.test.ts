// Tests of the mock virtio driver itself: the rings and chains it lays out
// must be what virtio 1.2 §2.7 says, or every device test built on it lies.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { native } from '../native/index.ts';
import { MockGuestMemory, MockSplitQueue, USER_ADDR_OFFSET, duplicateFds } from './mock-driver.ts';
import { DescFlag } from './ring-layout.ts';

function descriptorAt(memory: MockGuestMemory, gpa: bigint) {
  const b = memory.read(gpa, 16);
  return { addr: b.readBigUInt64LE(0), len: b.readUInt32LE(8), flags: b.readUInt16LE(12), next: b.readUInt16LE(14) };
}

describe('MockGuestMemory', () => {
  it('allocates aligned ranges and reads back what it writes', () => {
    const mem = new MockGuestMemory(native, 64 * 1024);
    const a = mem.alloc(3, 1);
    const b = mem.alloc(8, 16);
    expect(b % 16n).toBe(0n);
    expect(b).toBeGreaterThan(a);
    mem.write(b, Buffer.from('12345678'));
    expect(mem.read(b, 8).toString()).toBe('12345678');
    expect(() => mem.read(mem.base - 1n, 1)).toThrow(/outside/);
    expect(() => mem.alloc(64 * 1024)).toThrow(/exhausted/);
    mem.close();
  });

  it('describes its regions with duplicated fds of the same memory', async () => {
    const mem = new MockGuestMemory(native, 64 * 1024, { regions: 2 });
    const regions = await mem.regions();
    expect(regions.map((r) => [r.guestPhysAddr, r.size, r.userAddr, r.mmapOffset])).toEqual([
      [mem.base, 32768n, mem.base + USER_ADDR_OFFSET, 0n],
      [mem.base + 32768n, 32768n, mem.base + 32768n + USER_ADDR_OFFSET, 32768n],
    ]);
    mem.write(mem.base + 32768n + 5n, Buffer.from('via region 1'));
    const readBack = Buffer.alloc(12);
    fs.readSync(regions[1]!.fd, readBack, 0, 12, 32768 + 5);
    expect(readBack.toString()).toBe('via region 1');
    const across = mem.allocAcrossRegions(64);
    expect(across < mem.base + 32768n && across + 64n > mem.base + 32768n).toBe(true);
    for (const r of regions) native.closeFd(r.fd);
    mem.close();
  });

  it('duplicateFds returns new descriptors for the same files', async () => {
    const ev = native.eventfd();
    const [dup] = await duplicateFds(native, [ev]);
    expect(dup).not.toBe(ev);
    native.eventfdSignal(dup!);
    expect(await native.eventfdWait(ev, 1000)).toBe(true);
    native.closeFd(dup!);
    native.closeFd(ev);
  });
});

describe('MockSplitQueue', () => {
  it('lays out a direct chain: readable first, NEXT links, WRITE flags, avail entry', () => {
    const mem = new MockGuestMemory(native, 64 * 1024);
    const q = new MockSplitQueue(mem, 8);
    expect(q.descGpa % 16n).toBe(0n);
    expect(q.usedGpa % 4n).toBe(0n);
    const head = q.addChain([{ data: Buffer.from('ab') }, { writableLength: 5 }]);
    const d0 = descriptorAt(mem, q.descGpa + BigInt(16 * head));
    expect(d0).toMatchObject({ len: 2, flags: DescFlag.NEXT });
    expect(mem.read(d0.addr, 2).toString()).toBe('ab');
    const d1 = descriptorAt(mem, q.descGpa + BigInt(16 * d0.next));
    expect(d1).toMatchObject({ len: 5, flags: DescFlag.WRITE });
    expect(mem.read(q.availGpa + 4n, 2).readUInt16LE(0)).toBe(head);
    // Not visible before publish().
    expect(mem.read(q.availGpa + 2n, 2).readUInt16LE(0)).toBe(0);
    q.publish();
    expect(mem.read(q.availGpa + 2n, 2).readUInt16LE(0)).toBe(1);
    q.close();
    mem.close();
  });

  it('lays out an indirect chain as one INDIRECT descriptor over a table', () => {
    const mem = new MockGuestMemory(native, 64 * 1024);
    const q = new MockSplitQueue(mem, 8);
    const head = q.addChain([{ data: Buffer.from('x') }, { data: Buffer.from('y') }, { writableLength: 4 }], { indirect: true });
    const d = descriptorAt(mem, q.descGpa + BigInt(16 * head));
    expect(d).toMatchObject({ len: 48, flags: DescFlag.INDIRECT });
    const entries = [0, 1, 2].map((i) => descriptorAt(mem, d.addr + BigInt(16 * i)));
    expect(entries.map((e) => [e.flags, e.next])).toEqual([
      [DescFlag.NEXT, 1],
      [DescFlag.NEXT, 2],
      [DescFlag.WRITE, 0],
    ]);
    q.close();
    mem.close();
  });

  it('reclaims used entries and frees their descriptors', () => {
    const mem = new MockGuestMemory(native, 64 * 1024);
    const q = new MockSplitQueue(mem, 2);
    const a = q.addChain([{ writableLength: 4 }]);
    const b = q.addChain([{ writableLength: 4 }]);
    expect(() => q.addChain([{ writableLength: 4 }])).toThrow(/no free descriptors/);
    // Play the device: write data and a used element for `b`.
    const d = descriptorAt(mem, q.descGpa + BigInt(16 * b));
    mem.write(d.addr, Buffer.from('done'));
    const used = Buffer.alloc(8);
    used.writeUInt32LE(b, 0);
    used.writeUInt32LE(4, 4);
    mem.write(q.usedGpa + 4n, used);
    mem.storeU16(q.usedGpa + 2n, 1);
    expect(q.reclaim()).toEqual([{ head: b, len: 4, data: Buffer.from('done') }]);
    expect(q.addChain([{ writableLength: 1 }])).toBe(b);
    expect(a).not.toBe(b);
    q.close();
    mem.close();
  });
});
