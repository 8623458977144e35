// Hostile-guest tests: one per class of broken ring or message. Each must end
// in onError for the queue (queue stopped, process alive) or a thrown Error
// from the setter — never a crash, hang or out-of-bounds access.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native, type MemoryRegionDesc } from './index.ts';
import { MockGuestMemory, MockSplitQueue, duplicateFds, encodeDescriptor } from '../virtio/mock-driver.ts';
import { DescFlag, VirtioFeature } from '../virtio/ring-layout.ts';
import { type Rig, createRecordingDevice, settle, setupRig, waitFor } from './device-harness.ts';

let rig: Rig | undefined;
afterEach(() => {
  rig?.close();
  rig = undefined;
});

/** Waits for exactly one onError on queue 0 matching `reason`, and checks
 * the queue stopped and ignores further kicks. */
async function expectViolation(r: Rig, reason: RegExp): Promise<void> {
  await waitFor(() => r.errors.length > 0, 3000, 'onError');
  expect(r.errors).toHaveLength(1);
  expect(r.errors[0]!.queue).toBe(0);
  expect(r.errors[0]!.reason).toMatch(reason);
  expect(r.device.queueState(0).started).toBe(false);
  const chainsBefore = r.chains.length;
  r.queue.kick();
  await settle(30);
  expect(r.chains.length).toBe(chainsBefore);
  expect(r.errors).toHaveLength(1);
}

/** Publishes `head` as the next avail entry and kicks. */
function offer(r: Rig, head: number): void {
  r.queue.pushAvail(head);
  r.queue.publishAndKick();
}

describe('hostile descriptor chains', () => {
  it('descriptor loop', async () => {
    rig = await setupRig();
    const buf = rig.memory.alloc(16);
    rig.queue.writeDescriptor(0, { addr: buf, len: 16, flags: DescFlag.NEXT, next: 1 });
    rig.queue.writeDescriptor(1, { addr: buf, len: 16, flags: DescFlag.NEXT, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /longer than the queue/);
  });

  it('chain longer than the queue (every descriptor chained, last back to first)', async () => {
    rig = await setupRig({ queueSize: 4 });
    const buf = rig.memory.alloc(8);
    for (let i = 0; i < 4; i++) rig.queue.writeDescriptor(i, { addr: buf, len: 8, flags: DescFlag.NEXT, next: (i + 1) % 4 });
    offer(rig, 2);
    await expectViolation(rig, /longer than the queue/);
  });

  it('loop inside an indirect table', async () => {
    rig = await setupRig();
    const buf = rig.memory.alloc(8);
    const table = rig.memory.alloc(16 * 3);
    for (let i = 0; i < 3; i++) {
      rig.queue.memory.write(table + BigInt(16 * i), descriptorBytes(buf, 8, DescFlag.NEXT, (i + 1) % 3));
    }
    rig.queue.writeDescriptor(0, { addr: table, len: 48, flags: DescFlag.INDIRECT, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /longer than its indirect table/);
  });

  it('nested indirect table', async () => {
    rig = await setupRig();
    const inner = rig.memory.alloc(16);
    rig.memory.write(inner, descriptorBytes(rig.memory.alloc(8), 8, 0, 0));
    const outer = rig.memory.alloc(16);
    rig.memory.write(outer, descriptorBytes(inner, 16, DescFlag.INDIRECT, 0));
    rig.queue.writeDescriptor(0, { addr: outer, len: 16, flags: DescFlag.INDIRECT, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /nested indirect/);
  });

  it('indirect length not a multiple of 16', async () => {
    rig = await setupRig();
    const table = rig.memory.alloc(32);
    rig.queue.writeDescriptor(0, { addr: table, len: 24, flags: DescFlag.INDIRECT, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /not a non-zero multiple of 16/);
  });

  it('indirect length zero', async () => {
    rig = await setupRig();
    rig.queue.writeDescriptor(0, { addr: rig.memory.alloc(16), len: 0, flags: DescFlag.INDIRECT, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /not a non-zero multiple of 16/);
  });

  it('indirect together with NEXT', async () => {
    rig = await setupRig();
    const table = rig.memory.alloc(16);
    rig.memory.write(table, descriptorBytes(rig.memory.alloc(8), 8, 0, 0));
    rig.queue.writeDescriptor(0, { addr: table, len: 16, flags: DescFlag.INDIRECT | DescFlag.NEXT, next: 1 });
    offer(rig, 0);
    await expectViolation(rig, /indirect descriptor has NEXT/);
  });

  it('indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC', async () => {
    rig = await setupRig({ features: VirtioFeature.VERSION_1 });
    rig.queue.addChain([{ data: Buffer.from([1]) }], { indirect: true });
    rig.queue.publishAndKick();
    await expectViolation(rig, /without VIRTIO_RING_F_INDIRECT_DESC/);
  });

  it('indirect table outside guest memory', async () => {
    rig = await setupRig();
    rig.queue.writeDescriptor(0, { addr: 0x10n, len: 32, flags: DescFlag.INDIRECT, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /indirect table .* not inside one guest memory region/);
  });

  it('buffer address outside any region', async () => {
    rig = await setupRig();
    rig.queue.writeDescriptor(0, { addr: 0n, len: 16, flags: 0, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /not inside one guest memory region/);
  });

  it('buffer running past the end of memory', async () => {
    rig = await setupRig();
    const end = rig.memory.base + BigInt(rig.memory.size);
    rig.queue.writeDescriptor(0, { addr: end - 8n, len: 16, flags: DescFlag.WRITE, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /not inside one guest memory region/);
  });

  it('buffer spanning two regions', async () => {
    rig = await setupRig({ memory: { regions: 2 } });
    const across = rig.memory.allocAcrossRegions(64);
    rig.queue.writeDescriptor(0, { addr: across, len: 64, flags: 0, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /not inside one guest memory region/);
  });

  it('buffer whose address + length overflows 64 bits', async () => {
    rig = await setupRig();
    rig.queue.writeDescriptor(0, { addr: 0xffff_ffff_ffff_fff0n, len: 0x20, flags: 0, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /not inside one guest memory region/);
  });

  it('zero-length descriptor', async () => {
    rig = await setupRig();
    rig.queue.writeDescriptor(0, { addr: rig.memory.alloc(8), len: 0, flags: 0, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /zero-length descriptor/);
  });

  it('huge length (beyond maxChainBytes)', async () => {
    rig = await setupRig();
    rig.queue.writeDescriptor(0, { addr: rig.memory.alloc(8), len: 0xffff_ffff, flags: DescFlag.WRITE, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /exceeds 1048576 bytes/);
  });

  it('running chain total beyond maxChainBytes', async () => {
    rig = await setupRig({ maxChainBytes: 4096, memorySize: 1 << 20 });
    rig.queue.addChain([{ data: Buffer.alloc(3000) }, { writableLength: 3000 }]);
    rig.queue.publishAndKick();
    await expectViolation(rig, /exceeds 4096 bytes/);
  });

  it('avail index jumping more than the queue size ahead', async () => {
    rig = await setupRig();
    rig.queue.addChain([{ data: Buffer.from([1]) }]);
    rig.queue.setAvailIdx(17);
    rig.queue.kick();
    await expectViolation(rig, /ahead of last avail/);
  });

  it('avail entry naming a descriptor beyond the queue size', async () => {
    rig = await setupRig();
    offer(rig, 999);
    await expectViolation(rig, /beyond queue size/);
  });

  it('next index beyond the queue size', async () => {
    rig = await setupRig();
    rig.queue.writeDescriptor(0, { addr: rig.memory.alloc(8), len: 8, flags: DescFlag.NEXT, next: 16 });
    offer(rig, 0);
    await expectViolation(rig, /next index 16 beyond table size 16/);
  });

  it('device-readable descriptor after a device-writable one', async () => {
    rig = await setupRig();
    const buf = rig.memory.alloc(16);
    rig.queue.writeDescriptor(0, { addr: buf, len: 8, flags: DescFlag.WRITE | DescFlag.NEXT, next: 1 });
    rig.queue.writeDescriptor(1, { addr: buf + 8n, len: 8, flags: 0, next: 0 });
    offer(rig, 0);
    await expectViolation(rig, /readable descriptor after a device-writable/);
  });

  it('chain head made available again while in flight', async () => {
    rig = await setupRig();
    const head = rig.queue.addChain([{ data: Buffer.from([1]) }, { writableLength: 1 }]);
    rig.queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1);
    offer(rig, head);
    await expectViolation(rig, /already in flight/);
  });

  it('a violation on one queue leaves other queues and the process running', async () => {
    rig = await setupRig();
    const other = new MockSplitQueue(rig.memory, 8);
    await other.configure(rig.device, 1);
    offer(rig, 999);
    await expectViolation(rig, /beyond queue size/);
    const head = other.addChain([{ data: Buffer.from('fine') }, { writableLength: 2 }]);
    other.publishAndKick();
    await waitFor(() => rig!.chains.some((c) => c.queue === 1));
    rig.device.complete(1, head, Buffer.from('ok'));
    expect(other.reclaim()[0]!.data.toString()).toBe('ok');
    other.close();
  });
});

describe('hostile ring set-up', () => {
  it('rejects ring addresses outside guest memory', async () => {
    rig = await setupRig({ unconfigured: true });
    const { device, queue, memory } = rig;
    device.setVringNum(0, 16);
    expect(() => device.setVringAddr(0, { ...queue.vringAddr(), descUserAddr: 0x1000n })).toThrow(
      /descriptor table .* not inside one guest memory region/,
    );
    const end = memory.userAddr(memory.base + BigInt(memory.size));
    expect(() => device.setVringAddr(0, { ...queue.vringAddr(), usedUserAddr: end - 16n })).toThrow(/used ring/);
    expect(() => device.setVringAddr(0, { ...queue.vringAddr(), availUserAddr: 0xffff_ffff_ffff_fffen })).toThrow(
      /avail ring/,
    );
  });

  it('rejects misaligned rings', async () => {
    rig = await setupRig({ unconfigured: true });
    const { device, queue } = rig;
    device.setVringNum(0, 16);
    expect(() => device.setVringAddr(0, { ...queue.vringAddr(), descUserAddr: queue.vringAddr().descUserAddr + 8n })).toThrow(
      /not aligned to 16/,
    );
    expect(() => device.setVringAddr(0, { ...queue.vringAddr(), usedUserAddr: queue.vringAddr().usedUserAddr + 2n })).toThrow(
      /not aligned to 4/,
    );
  });

  it('checks rings against a queue size set after the addresses', async () => {
    rig = await setupRig({ unconfigured: true, memorySize: 64 * 1024 });
    const { device, memory } = rig;
    // Rings for a 16-entry queue at the very end of memory...
    const tail = memory.base + BigInt(memory.size);
    const q = new MockSplitQueue(memory, 16, { descGpa: tail - 512n, availGpa: tail - 512n + 256n, usedGpa: tail - 160n });
    await q.configure(device, 0);
    expect(device.queueState(0).started).toBe(true);
    // ...do not hold a 256-entry queue.
    expect(() => device.setVringNum(0, 256)).toThrow(/not inside one guest memory region/);
    expect(device.queueState(0).started).toBe(false);
    q.close();
  });

  it('rejects bad queue sizes, queue indices and polling mode', async () => {
    rig = await setupRig({ unconfigured: true });
    const { device } = rig;
    expect(() => device.setVringNum(0, 0)).toThrow(/power of two/);
    expect(() => device.setVringNum(0, 24)).toThrow(/power of two/);
    expect(() => device.setVringNum(0, 512)).toThrow(/power of two in \[1, 256\]/);
    expect(() => device.setVringNum(2, 16)).toThrow(/out of range/);
    expect(() => device.setVringBase(0, 0x10000)).toThrow(/exceeds 0xffff/);
    expect(() => device.setVringKick(0, -1)).toThrow(/polling mode/);
  });

  it('rejects SET_VRING_ADDR before SET_MEM_TABLE', () => {
    const rec = createRecordingDevice();
    expect(() => rec.device.setVringAddr(0, { flags: 0, descUserAddr: 0n, usedUserAddr: 0n, availUserAddr: 0n, logGuestAddr: 0n })).toThrow(
      /before SET_MEM_TABLE/,
    );
  });
});

describe('hostile SET_MEM_TABLE', () => {
  const memory = () => new MockGuestMemory(native, 64 * 1024, { regions: 2 });

  async function attempt(mutate: (regions: MemoryRegionDesc[]) => MemoryRegionDesc[], reason: RegExp, maxRegions = 8) {
    const mem = memory();
    const rec = createRecordingDevice({ maxRegions });
    const regions = mutate(await mem.regions());
    expect(() => rec.device.setMemTable(regions)).toThrow(reason);
    // Ownership passed: every fd is closed even though the call failed.
    for (const r of regions) expect(() => fs.fstatSync(r.fd)).toThrow(/EBADF/);
    mem.close();
  }

  it('overlapping guest-physical ranges', () =>
    attempt(([a, b]) => [a!, { ...b!, guestPhysAddr: a!.guestPhysAddr + 4096n }], /overlaps region 0 in guest physical/));

  it('overlapping user address ranges', () =>
    attempt(([a, b]) => [a!, { ...b!, userAddr: a!.userAddr + a!.size - 1n }], /overlaps region 0 in user address/));

  it('guest address + size overflowing 64 bits', () =>
    attempt(([a, b]) => [a!, { ...b!, guestPhysAddr: 0xffff_ffff_ffff_f000n }], /guest address \+ size overflows/));

  it('user address + size overflowing 64 bits', () =>
    attempt(([a, b]) => [a!, { ...b!, userAddr: 0xffff_ffff_ffff_ffffn }], /user address \+ size overflows/));

  it('mmap offset + size overflowing 64 bits', () =>
    attempt(([a, b]) => [a!, { ...b!, mmapOffset: 0xffff_ffff_ffff_ff00n }], /mmap offset \+ size overflows/));

  it('zero-sized region', () => attempt(([a, b]) => [a!, { ...b!, size: 0n }], /size is 0/));

  it('more regions than maxRegions', () => attempt((r) => r, /at most 1 allowed/, 1));

  it('a region whose fd cannot be mapped fails and leaves the old table in place', async () => {
    rig = await setupRig();
    const regions = await rig.memory.regions();
    const [bogus] = await duplicateFds(native, [rig.queue.kickFd]); // an eventfd cannot be mmapped
    native.closeFd(regions[0]!.fd);
    regions[0]!.fd = bogus!;
    expect(() => rig!.device.setMemTable(regions)).toThrow(/mmap of memory region 0/);
    // The queue still works on the old table.
    const head = rig.queue.addChain([{ data: Buffer.from([1]) }, { writableLength: 1 }]);
    rig.queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1);
    rig.device.complete(0, head, Buffer.from([2]));
    expect(rig.queue.usedIdx()).toBe(1);
  });
});

/** The 16 bytes of one descriptor, for hand-built indirect tables. */
function descriptorBytes(addr: bigint, len: number, flags: number, next: number): Buffer {
  return encodeDescriptor({ addr, len, flags, next });
}
