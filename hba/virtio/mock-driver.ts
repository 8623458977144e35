// A mock virtio driver for tests: it plays the guest (and QEMU's part of
// vhost-user) against the native device without a VM. Guest memory is a real
// memfd shared with the device; rings are laid out in it exactly as a driver
// would (virtio 1.2 §2.7); kicks and interrupts are real eventfds.
//
// Besides the well-behaved path (addChain → publish → kick → reclaim) it has
// low-level writers (raw descriptors, avail entries and index) so tests can
// build every kind of hostile ring.
import type { MemoryRegionDesc, NativeBinding, VirtioDevice, VringAddr } from '../native/index.ts';
import {
  AvailFlag,
  DESC_SIZE,
  DescFlag,
  RingAlign,
  availRingBytes,
  descTableBytes,
  usedRingBytes,
} from './ring-layout.ts';

/** Distance between a guest-physical address and the made-up front-end
 * virtual address of the same byte (what QEMU's userAddr would be). */
export const USER_ADDR_OFFSET = 0x7f00_0000_0000n;

/** Duplicates fds the way vhost-user does: through SCM_RIGHTS over a
 * socketpair. The device takes ownership of what it is given, so the driver
 * hands it duplicates and keeps its own. */
export async function duplicateFds(native: NativeBinding, fds: number[]): Promise<number[]> {
  const [a, b] = native.socketPair();
  try {
    const received = new Promise<number[]>((resolve, reject) => {
      b.start(
        (msg) => resolve(msg.fds),
        (reason) => reject(new Error(`fd duplication socket closed: ${reason}`)),
      );
    });
    const header = Buffer.alloc(12); // an empty vhost-user frame carries the fds
    a.send(header, fds);
    return await received;
  } finally {
    a.close();
    b.close();
  }
}

/** Options of MockGuestMemory. */
export interface MockGuestMemoryOptions {
  /** Split the memory into this many regions of equal size (default 1);
   * the regions are contiguous in guest-physical space but mapped separately,
   * so a buffer across a boundary must be rejected. */
  regions?: number;
  /** Guest-physical address of the first byte (default 1 MiB, so gpa 0 lies
   * outside memory). */
  base?: bigint;
}

/** Guest RAM over a native memfd, with a bump allocator. */
export class MockGuestMemory {
  readonly native: NativeBinding;
  readonly fd: number;
  readonly size: number;
  readonly base: bigint;
  readonly regionCount: number;
  /** The whole memory as a Buffer (shares the mapping). */
  readonly bytes: Buffer;
  /** 16-bit view for ring indices: written with Atomics so the device never
   * sees a torn index. */
  private readonly words: Uint16Array;
  private next = 0;

  /** `size` must be a multiple of 4096 * regions. */
  constructor(native: NativeBinding, size: number, options: MockGuestMemoryOptions = {}) {
    this.native = native;
    this.regionCount = options.regions ?? 1;
    this.base = options.base ?? 0x10_0000n;
    if (size <= 0 || size % (4096 * this.regionCount) !== 0) {
      throw new Error(`memory size ${size} must be a positive multiple of ${4096 * this.regionCount}`);
    }
    const { fd, memory } = native.memfd('vhba-mock-guest', size);
    this.fd = fd;
    this.size = size;
    this.bytes = Buffer.from(memory);
    this.words = new Uint16Array(memory);
  }

  /** Stores a ring index (2-aligned) as one 16-bit store, ordered after every
   * earlier write (Atomics.store is sequentially consistent). */
  storeU16(gpa: bigint, value: number): void {
    const offset = this.offsetOf(gpa, 2);
    if (offset % 2 !== 0) throw new Error('ring index must be 2-aligned');
    Atomics.store(this.words, offset / 2, value);
  }

  /** Loads a ring index (2-aligned) as one 16-bit load. */
  loadU16(gpa: bigint): number {
    const offset = this.offsetOf(gpa, 2);
    if (offset % 2 !== 0) throw new Error('ring index must be 2-aligned');
    return Atomics.load(this.words, offset / 2);
  }

  /** Reserves `length` bytes aligned to `align`; returns the guest-physical address. */
  alloc(length: number, align = 16): bigint {
    const start = Math.ceil(this.next / align) * align;
    if (length < 0 || start + length > this.size) {
      throw new Error(`mock guest memory exhausted: ${length} bytes at ${start} of ${this.size}`);
    }
    this.next = start + length;
    return this.base + BigInt(start);
  }

  /** Reserves `length` bytes so that they straddle the boundary between
   * region `i` and region `i + 1` (for hostile tests). */
  allocAcrossRegions(length: number, i = 0): bigint {
    const boundary = ((i + 1) * this.size) / this.regionCount;
    return this.base + BigInt(boundary - Math.floor(length / 2));
  }

  /** Byte offset of `gpa` in the memfd; throws outside memory. */
  offsetOf(gpa: bigint, length = 1): number {
    const offset = gpa - this.base;
    if (offset < 0n || offset + BigInt(length) > BigInt(this.size)) {
      throw new Error(`gpa 0x${gpa.toString(16)} (+${length}) is outside mock guest memory`);
    }
    return Number(offset);
  }

  /** Copies `data` into guest memory at `gpa`. */
  write(gpa: bigint, data: Buffer): void {
    data.copy(this.bytes, this.offsetOf(gpa, data.length));
  }

  /** Copies `length` bytes out of guest memory at `gpa`. */
  read(gpa: bigint, length: number): Buffer {
    const offset = this.offsetOf(gpa, length);
    return Buffer.from(this.bytes.subarray(offset, offset + length));
  }

  /** The front-end virtual address QEMU would use for `gpa`. */
  userAddr(gpa: bigint): bigint {
    return gpa + USER_ADDR_OFFSET;
  }

  /** The SET_MEM_TABLE description with freshly duplicated fds (the device
   * closes what it is given). */
  async regions(): Promise<MemoryRegionDesc[]> {
    const regionSize = this.size / this.regionCount;
    const fds = await duplicateFds(this.native, new Array<number>(this.regionCount).fill(this.fd));
    return fds.map((fd, i) => {
      const offset = BigInt(i * regionSize);
      return {
        guestPhysAddr: this.base + offset,
        size: BigInt(regionSize),
        userAddr: this.userAddr(this.base + offset),
        mmapOffset: offset,
        fd,
      };
    });
  }

  /** Closes the memfd (the mapping stays while `bytes` is referenced). */
  close(): void {
    this.native.closeFd(this.fd);
  }
}

/** One segment of a chain as addChain takes it: readable data, or a
 * writable buffer of `writableLength` bytes. */
export interface ChainSegment {
  data?: Buffer;
  writableLength?: number;
}

/** A raw descriptor (virtio 1.2 §2.7.5). */
export interface RawDescriptor {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

/** A used-ring element read back (virtio 1.2 §2.7.8). */
export interface UsedElement {
  id: number;
  len: number;
}

interface ChainRecord {
  descriptors: number[];
  writable: { gpa: bigint; length: number }[];
}

/** Options of MockSplitQueue. */
export interface MockSplitQueueOptions {
  /** Address of the rings, default: allocated from `memory`. */
  descGpa?: bigint;
  availGpa?: bigint;
  usedGpa?: bigint;
}

/** The driver side of one split virtqueue laid out in MockGuestMemory. */
export class MockSplitQueue {
  readonly memory: MockGuestMemory;
  readonly size: number;
  readonly descGpa: bigint;
  readonly availGpa: bigint;
  readonly usedGpa: bigint;
  /** Driver-owned eventfds; the device gets duplicates in configure(). */
  readonly kickFd: number;
  readonly callFd: number;
  /** Next avail index the driver will publish. */
  availIdx = 0;
  /** Used index up to which reclaim() has consumed. */
  lastUsed = 0;
  private readonly freeDescriptors: number[] = [];
  private readonly chains = new Map<number, ChainRecord>();

  constructor(memory: MockGuestMemory, size: number, options: MockSplitQueueOptions = {}) {
    this.memory = memory;
    this.size = size;
    this.descGpa = options.descGpa ?? memory.alloc(descTableBytes(size), RingAlign.desc);
    this.availGpa = options.availGpa ?? memory.alloc(availRingBytes(size), RingAlign.avail);
    this.usedGpa = options.usedGpa ?? memory.alloc(usedRingBytes(size), RingAlign.used);
    for (let i = 0; i < size; i++) this.freeDescriptors.push(i);
    this.kickFd = memory.native.eventfd();
    this.callFd = memory.native.eventfd();
  }

  /** SET_VRING_ADDR payload (front-end virtual addresses). */
  vringAddr(): VringAddr {
    return {
      flags: 0,
      descUserAddr: this.memory.userAddr(this.descGpa),
      usedUserAddr: this.memory.userAddr(this.usedGpa),
      availUserAddr: this.memory.userAddr(this.availGpa),
      logGuestAddr: 0n,
    };
  }

  /** Plays QEMU's ring set-up on `device` (vhost-user.rst order: NUM, BASE,
   * ADDR, KICK, CALL, then ENABLE). `base` is the avail index the device
   * starts from (default 0, a fresh ring). */
  async configure(device: VirtioDevice, queue: number, options: { enable?: boolean; base?: number } = {}): Promise<void> {
    device.setVringNum(queue, this.size);
    device.setVringBase(queue, options.base ?? 0);
    device.setVringAddr(queue, this.vringAddr());
    const [kick, call] = await duplicateFds(this.memory.native, [this.kickFd, this.callFd]);
    device.setVringKick(queue, kick!);
    device.setVringCall(queue, call!);
    if (options.enable ?? true) device.setVringEnable(queue, true);
  }

  /** Builds a chain from `segments` (readable ones first, as virtio 1.2
   * §2.7.4.2 requires) and puts its head in the avail ring without publishing.
   * With `indirect`, one descriptor points at an indirect table holding the
   * segments. Returns the head. */
  addChain(segments: ChainSegment[], options: { indirect?: boolean } = {}): number {
    if (segments.length === 0) throw new Error('a chain needs at least one segment');
    const buffers = segments.map((s) => {
      const length = s.data?.length ?? s.writableLength ?? 0;
      const gpa = this.memory.alloc(Math.max(length, 1), 8);
      if (s.data) this.memory.write(gpa, s.data);
      return { gpa, length, writable: s.data === undefined };
    });
    const record: ChainRecord = {
      descriptors: [],
      writable: buffers.filter((b) => b.writable).map((b) => ({ gpa: b.gpa, length: b.length })),
    };
    const raw = (i: number, count: number, base: number): RawDescriptor => {
      const b = buffers[i]!;
      const more = i + 1 < count;
      return {
        addr: b.gpa,
        len: b.length,
        flags: (b.writable ? DescFlag.WRITE : 0) | (more ? DescFlag.NEXT : 0),
        next: more ? base + i + 1 : 0,
      };
    };
    let head: number;
    if (options.indirect) {
      const tableGpa = this.memory.alloc(DESC_SIZE * buffers.length, 16);
      for (let i = 0; i < buffers.length; i++) {
        this.memory.write(tableGpa + BigInt(DESC_SIZE * i), encodeDescriptor(raw(i, buffers.length, 0)));
      }
      head = this.takeDescriptor();
      record.descriptors.push(head);
      this.writeDescriptor(head, { addr: tableGpa, len: DESC_SIZE * buffers.length, flags: DescFlag.INDIRECT, next: 0 });
    } else {
      const indices = buffers.map(() => this.takeDescriptor());
      record.descriptors.push(...indices);
      head = indices[0]!;
      for (let i = 0; i < buffers.length; i++) {
        const d = raw(i, buffers.length, 0);
        this.writeDescriptor(indices[i]!, { ...d, next: d.flags & DescFlag.NEXT ? indices[i + 1]! : 0 });
      }
    }
    this.chains.set(head, record);
    this.pushAvail(head);
    return head;
  }

  /** Puts `head` into the next avail slot (not yet published). */
  pushAvail(head: number): void {
    this.setAvailEntry(this.availIdx % this.size, head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }

  /** Makes everything pushed so far visible to the device (avail->idx). */
  publish(): void {
    this.setAvailIdx(this.availIdx);
  }

  /** Notifies the device (the kick eventfd). */
  kick(): void {
    this.memory.native.eventfdSignal(this.kickFd);
  }

  /** publish() then kick(). */
  publishAndKick(): void {
    this.publish();
    this.kick();
  }

  /** Waits for the device's interrupt (call eventfd); true if it fired. */
  waitForCall(timeoutMs: number): Promise<boolean> {
    return this.memory.native.eventfdWait(this.callFd, timeoutMs);
  }

  // ---- low-level writers for hostile tests ----

  /** Writes descriptor `index` of the table verbatim. */
  writeDescriptor(index: number, d: RawDescriptor): void {
    this.memory.write(this.descGpa + BigInt(DESC_SIZE * index), encodeDescriptor(d));
  }

  /** Writes avail ring entry `slot` verbatim. */
  setAvailEntry(slot: number, head: number): void {
    this.writeU16(this.availGpa + BigInt(4 + 2 * slot), head);
  }

  /** Writes avail->idx verbatim (any value, for hostile tests). */
  setAvailIdx(idx: number): void {
    this.writeU16(this.availGpa + 2n, idx & 0xffff);
  }

  /** Writes avail->flags (VRING_AVAIL_F_NO_INTERRUPT). */
  setAvailFlags(flags: number): void {
    this.writeU16(this.availGpa, flags);
  }

  /** Suppresses or allows interrupts without EVENT_IDX. */
  setNoInterrupt(on: boolean): void {
    this.setAvailFlags(on ? AvailFlag.NO_INTERRUPT : 0);
  }

  /** Writes used_event (after the avail ring; EVENT_IDX). */
  setUsedEvent(idx: number): void {
    this.writeU16(this.availGpa + BigInt(4 + 2 * this.size), idx & 0xffff);
  }

  // ---- reading back what the device wrote ----

  /** used->idx as the device last published it. */
  usedIdx(): number {
    return this.readU16(this.usedGpa + 2n);
  }

  /** avail_event (after the used ring; EVENT_IDX). */
  availEvent(): number {
    return this.readU16(this.usedGpa + BigInt(4 + 8 * this.size));
  }

  /** used->flags. */
  usedFlags(): number {
    return this.readU16(this.usedGpa);
  }

  /** The used element in ring slot `slot`. */
  usedElement(slot: number): UsedElement {
    const at = this.usedGpa + BigInt(4 + 8 * (slot % this.size));
    const b = this.memory.read(at, 8);
    return { id: b.readUInt32LE(0), len: b.readUInt32LE(4) };
  }

  /** The bytes the device wrote into the writable segments of chain `head`
   * (concatenated, `len` bytes as the used element says). */
  writtenData(head: number, len: number): Buffer {
    const record = this.chains.get(head);
    if (!record) throw new Error(`no chain with head ${head}`);
    const parts: Buffer[] = [];
    let remaining = len;
    for (const w of record.writable) {
      if (remaining <= 0) break;
      const n = Math.min(remaining, w.length);
      parts.push(this.memory.read(w.gpa, n));
      remaining -= n;
    }
    return Buffer.concat(parts);
  }

  /** Consumes used elements since the last call: frees their descriptors and
   * returns each with the data written into its writable part. */
  reclaim(): { head: number; len: number; data: Buffer }[] {
    const out: { head: number; len: number; data: Buffer }[] = [];
    const end = this.usedIdx();
    while (this.lastUsed !== end) {
      const e = this.usedElement(this.lastUsed % this.size);
      const record = this.chains.get(e.id);
      out.push({ head: e.id, len: e.len, data: record ? this.writtenData(e.id, e.len) : Buffer.alloc(0) });
      if (record) {
        this.freeDescriptors.push(...record.descriptors);
        this.chains.delete(e.id);
      }
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Closes the driver's eventfds (the device's duplicates are its own). */
  close(): void {
    this.memory.native.closeFd(this.kickFd);
    this.memory.native.closeFd(this.callFd);
  }

  private takeDescriptor(): number {
    const i = this.freeDescriptors.shift();
    if (i === undefined) throw new Error('mock queue has no free descriptors');
    return i;
  }

  private writeU16(gpa: bigint, value: number): void {
    this.memory.storeU16(gpa, value);
  }

  private readU16(gpa: bigint): number {
    return this.memory.loadU16(gpa);
  }
}

/** The 16 little-endian bytes of a descriptor. */
export function encodeDescriptor(d: RawDescriptor): Buffer {
  const b = Buffer.alloc(DESC_SIZE);
  b.writeBigUInt64LE(d.addr, 0);
  b.writeUInt32LE(d.len >>> 0, 8);
  b.writeUInt16LE(d.flags, 12);
  b.writeUInt16LE(d.next, 14);
  return b;
}
