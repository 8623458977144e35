// An in-memory BlockBackend for tests: sparse (64 KiB chunks allocated on
// first write), so a test can have a disk of terabytes. It counts flushes
// and FUA writes, records discards, and can be told to fail an operation.
import type { BlockBackend } from '../scsi/types.ts';

const CHUNK = 64 * 1024;

/** Operations a test can make fail. */
export type MemoryBackendOperation = 'read' | 'write' | 'flush' | 'discard' | 'writeZeroes' | 'resize';

/** A sparse in-memory disk. */
export class MemoryBackend implements BlockBackend {
  #size: number;
  readonly #chunks = new Map<number, Buffer>();
  #closed = false;
  #failing = new Set<MemoryBackendOperation>();
  /** Number of flush() calls. */
  flushes = 0;
  /** Number of write() calls with fua = true. */
  fuaWrites = 0;
  /** Number of write() calls with fua = false. */
  cachedWrites = 0;
  /** Every discard as [offset, length]. */
  readonly discards: [number, number][] = [];
  /** Every writeZeroes as [offset, length]. */
  readonly zeroedRanges: [number, number][] = [];

  constructor(sizeBytes: number) {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new RangeError(`size ${sizeBytes}`);
    this.#size = sizeBytes;
  }

  /** Makes every later `op` reject (until healed). */
  failOn(op: MemoryBackendOperation): void {
    this.#failing.add(op);
  }

  /** Undoes failOn for every operation. */
  heal(): void {
    this.#failing.clear();
  }

  #check(op: MemoryBackendOperation, offset = 0, length = 0): void {
    if (this.#closed) throw new Error('backend closed');
    if (this.#failing.has(op)) throw new Error(`injected ${op} failure`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.#size) {
      throw new RangeError(`${op} [${offset}, +${length}) outside ${this.#size}`);
    }
  }

  size(): number {
    return this.#size;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.#check('read', offset, length);
    const out = Buffer.alloc(length);
    for (let done = 0; done < length;) {
      const pos = offset + done;
      const index = Math.floor(pos / CHUNK);
      const within = pos - index * CHUNK;
      const n = Math.min(CHUNK - within, length - done);
      this.#chunks.get(index)?.copy(out, done, within, within + n);
      done += n;
    }
    return out;
  }

  #store(offset: number, data: Buffer, length: number): void {
    for (let done = 0; done < length;) {
      const pos = offset + done;
      const index = Math.floor(pos / CHUNK);
      const within = pos - index * CHUNK;
      const n = Math.min(CHUNK - within, length - done);
      let chunk = this.#chunks.get(index);
      if (!chunk) this.#chunks.set(index, (chunk = Buffer.alloc(CHUNK)));
      data.copy(chunk, within, done, done + n);
      done += n;
    }
  }

  /** Zeroes [offset, offset+length) touching only allocated chunks, so huge ranges cost nothing. */
  #zero(offset: number, length: number): void {
    const end = offset + length;
    for (const [index, chunk] of this.#chunks) {
      const start = index * CHUNK;
      const from = Math.max(start, offset);
      const to = Math.min(start + CHUNK, end);
      if (from >= to) continue;
      if (to - from === CHUNK) this.#chunks.delete(index);
      else chunk.fill(0, from - start, to - start);
    }
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.#check('write', offset, data.length);
    this.#store(offset, data, data.length);
    if (fua) this.fuaWrites++;
    else this.cachedWrites++;
  }

  async flush(): Promise<void> {
    this.#check('flush');
    this.flushes++;
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#check('discard', offset, length);
    this.#zero(offset, length);
    this.discards.push([offset, length]);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.#check('writeZeroes', offset, length);
    this.#zero(offset, length);
    this.zeroedRanges.push([offset, length]);
  }

  async resize(bytes: number): Promise<void> {
    this.#check('resize');
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`size ${bytes}`);
    if (bytes < this.#size) this.#zero(bytes, this.#size - bytes);
    this.#size = bytes;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#chunks.clear();
  }

  /** Bytes held in memory (allocated chunks). */
  allocatedBytes(): number {
    return this.#chunks.size * CHUNK;
  }
}
