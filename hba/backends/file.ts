// A BlockBackend over a raw image file (sparse allowed). Two descriptors:
// a plain one for reads, cached writes and fdatasync, and an O_DSYNC one
// for FUA writes, so a FUA write is durable when its pwrite returns
// (SBC-3 §4.15, POSIX O_DSYNC). Discard punches holes through the native
// addon (fallocate PUNCH_HOLE | KEEP_SIZE).
import { constants as fsConstants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { syncDir } from '../../lib/atomic-file.ts';
import type { BlockBackend } from '../scsi/types.ts';
import { native } from '../native/index.ts';

/** How to open the image. */
export interface FileBackendOptions {
  /** Capacity in bytes: the file is grown (sparse) to it, never shrunk. Default: the file's size. */
  sizeBytes?: number;
  readOnly?: boolean;
  /** Create the file when it does not exist (mode 0600). Default false. */
  create?: boolean;
}

/** Zero buffer size for the writeZeroes fallback. */
const ZERO_CHUNK = 1 << 20;

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** A raw image file as a block device. */
export class FileBackend implements BlockBackend {
  readonly path: string;
  readonly readOnly: boolean;
  readonly #file: FileHandle;
  readonly #dsync: FileHandle | undefined;
  #size: number;
  #closed = false;

  private constructor(path: string, readOnly: boolean, file: FileHandle, dsync: FileHandle | undefined, size: number) {
    this.path = path;
    this.readOnly = readOnly;
    this.#file = file;
    this.#dsync = dsync;
    this.#size = size;
  }

  /** Opens (and with `create`, creates) the image, grows it to sizeBytes,
   * and opens the O_DSYNC descriptor for FUA writes. A read-only image
   * smaller than sizeBytes is not grown: reads past its end return zeros. */
  static async open(path: string, options: FileBackendOptions = {}): Promise<FileBackend> {
    const readOnly = options.readOnly ?? false;
    const sizeBytes = options.sizeBytes;
    if (sizeBytes !== undefined && (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0)) {
      throw new RangeError(`sizeBytes ${sizeBytes}`);
    }
    if (options.create) {
      try {
        const created = await open(path, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
        try {
          if (sizeBytes) await created.truncate(sizeBytes);
          await created.sync();
        } finally {
          await created.close();
        }
        await syncDir(dirname(path));
      } catch (error) {
        if (errorCode(error) !== 'EEXIST') throw error;
      }
    }
    const flags = readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
    const file = await open(path, flags);
    let dsync: FileHandle | undefined;
    try {
      const stat = await file.stat();
      if (!stat.isFile()) throw new Error(`${path} is not a regular file`);
      let size = stat.size;
      if (sizeBytes !== undefined && sizeBytes > size && !readOnly) {
        await file.truncate(sizeBytes); // sparse growth
        await file.datasync();
        size = sizeBytes;
      }
      if (!readOnly) dsync = await open(path, fsConstants.O_RDWR | fsConstants.O_DSYNC);
      return new FileBackend(path, readOnly, file, dsync, sizeBytes ?? size);
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  #check(op: string, offset: number, length: number): void {
    if (this.#closed) throw new Error(`${op}: ${this.path} is closed`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.#size) {
      throw new RangeError(`${op} [${offset}, +${length}) outside ${this.path} (${this.#size} bytes)`);
    }
  }

  #checkWritable(op: string): void {
    if (this.readOnly) throw new Error(`${op}: ${this.path} is read-only`);
  }

  size(): number {
    return this.#size;
  }

  /** The open descriptors, for the native fast path (hba/fastpath.ts
   * duplicates them); undefined once closed. dsyncFd is -1 when read-only. */
  nativeFds(): { fd: number; dsyncFd: number } | undefined {
    if (this.#closed) return undefined;
    return { fd: this.#file.fd, dsyncFd: this.#dsync?.fd ?? -1 };
  }

  /** Positional read; bytes past the end of the file (a read-only image
   * smaller than its capacity) read as zeros. */
  async read(offset: number, length: number): Promise<Buffer> {
    this.#check('read', offset, length);
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#file.read(out, done, length - done, offset + done);
      if (bytesRead === 0) break; // EOF: the rest stays zero
      done += bytesRead;
    }
    return out;
  }

  /** Positional write, to the O_DSYNC descriptor when `fua`. */
  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.#check('write', offset, data.length);
    this.#checkWritable('write');
    const handle = fua ? this.#dsync! : this.#file;
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await handle.write(data, done, data.length - done, offset + done);
      if (bytesWritten === 0) throw new Error(`write to ${this.path} made no progress`);
      done += bytesWritten;
    }
  }

  /** fdatasync: every completed write becomes durable. */
  async flush(): Promise<void> {
    if (this.#closed) throw new Error(`flush: ${this.path} is closed`);
    await this.#file.datasync();
  }

  /** Punches a hole; the range then reads as zeros. Needs the native addon. */
  async discard(offset: number, length: number): Promise<void> {
    this.#check('discard', offset, length);
    this.#checkWritable('discard');
    if (length === 0) return;
    if (typeof native.punchHole !== 'function') {
      throw new Error('discard: the native addon has no punchHole (rebuild it with `npm run build:native`)');
    }
    await native.punchHole(this.#file.fd, offset, length);
  }

  /** Zeroes a range: native zeroRange (FALLOC_FL_ZERO_RANGE) when the addon
   * has it, else plain writes of zeros in 1 MiB pieces. */
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.#check('writeZeroes', offset, length);
    this.#checkWritable('writeZeroes');
    if (length === 0) return;
    if (typeof native.zeroRange === 'function') {
      await native.zeroRange(this.#file.fd, offset, length);
      return;
    }
    const zeros = Buffer.alloc(Math.min(ZERO_CHUNK, length));
    for (let done = 0; done < length;) {
      const n = Math.min(zeros.length, length - done);
      await this.write(offset + done, n === zeros.length ? zeros : zeros.subarray(0, n), false);
      done += n;
    }
  }

  /** ftruncate to exactly `bytes` (grows sparse or shrinks), made durable. */
  async resize(bytes: number): Promise<void> {
    if (this.#closed) throw new Error(`resize: ${this.path} is closed`);
    this.#checkWritable('resize');
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`resize to ${bytes}`);
    await this.#file.truncate(bytes);
    await this.#file.datasync();
    this.#size = bytes;
  }

  /** Closes both descriptors; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([this.#file.close(), this.#dsync?.close()]);
  }
}
