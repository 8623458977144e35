// An in-memory PassthroughDevice (hba/native/index.ts) for tests of the
// engine's passthrough LUNs: a small direct-access disk that answers the way a
// real one does (SPC-4 INQUIRY with VPD 00h/80h/83h/B0h, SBC-3 READ
// CAPACITY(10)/(16), READ/WRITE(10)/(16), SYNCHRONIZE CACHE, TEST UNIT
// READY; anything else CHECK CONDITION / ILLEGAL REQUEST / INVALID COMMAND
// OPERATION CODE), records every CDB it receives, and can hold commands of
// one opcode until released (I/O in flight) or fail them with a virtio-scsi
// response code (device gone, timed out). Not production code.
import type { NativeLunCounters, PassthroughDevice, PassthroughOutcome } from '../native/index.ts';

/** Who the fake disk says it is. */
export interface FakeDiskIdentity {
  vendor: string;
  product: string;
  revision: string;
  serial: string;
  /** NAA designator, lowercase hex (16 or 32 digits). */
  wwn: string;
  logicalBlockSize: number;
  /** Logical blocks per physical block, as a power of two exponent. */
  physicalExponent: number;
  blockCount: number;
}

/** A default identity: 512-byte blocks, 1 MiB. */
export const FAKE_DISK: Readonly<FakeDiskIdentity> = Object.freeze({
  vendor: 'FAKEVEND',
  product: 'PASSTHRU DISK',
  revision: '1.0',
  serial: 'FAKE-SERIAL-0001',
  wwn: '5000c500a1b2c3d4',
  logicalBlockSize: 512,
  physicalExponent: 3,
  blockCount: 2048,
});

const GOOD = 0;
const CHECK_CONDITION = 2;

function fixedSense(key: number, asc: number, ascq: number): Buffer {
  const s = Buffer.alloc(18);
  s[0] = 0x70;
  s[2] = key;
  s[7] = 10;
  s[12] = asc;
  s[13] = ascq;
  return s;
}

function ascii(text: string, length: number): Buffer {
  return Buffer.from(text.padEnd(length, ' ').slice(0, length), 'ascii');
}

/** A command held in the device until the test releases it. */
interface Held {
  cdb: Buffer;
  release: () => void;
}

/** The fake device. */
export class FakePassthroughDevice implements PassthroughDevice {
  readonly description: string;
  readonly maxTransferBytes: number;
  readonly identity: FakeDiskIdentity;
  /** Every CDB that reached the device, in order. */
  readonly received: Buffer[] = [];
  /** The medium. */
  readonly data: Buffer;
  closed = false;
  /** Opcodes whose commands wait in the device until released. */
  readonly #holdOpcodes = new Set<number>();
  readonly #held: Held[] = [];
  #heldWaiters: (() => void)[] = [];
  /** Response codes the next commands get instead of an answer. */
  readonly #failures: number[] = [];

  constructor(identity: Partial<FakeDiskIdentity> = {}, options: { description?: string; maxTransferBytes?: number } = {}) {
    this.identity = { ...FAKE_DISK, ...identity };
    this.description = options.description ?? `fake ${this.identity.vendor} ${this.identity.product}`;
    this.maxTransferBytes = options.maxTransferBytes ?? 64 * 1024;
    this.data = Buffer.alloc(this.identity.blockCount * this.identity.logicalBlockSize);
  }

  /** Standard INQUIRY data (SPC-4 §6.6.2), 36 bytes. */
  standardInquiry(): Buffer {
    const d = Buffer.alloc(36);
    d[0] = 0x00; // peripheral qualifier 000b, direct access block device
    d[2] = 0x06; // SPC-4
    d[3] = 0x12; // HISUP, response data format 2
    d[4] = 36 - 5;
    d[7] = 0x02; // CMDQUE
    ascii(this.identity.vendor, 8).copy(d, 8);
    ascii(this.identity.product, 16).copy(d, 16);
    ascii(this.identity.revision, 4).copy(d, 32);
    return d;
  }

  /** VPD page `page` (SPC-4 §7.8), or undefined if the disk has none. */
  vpdPage(page: number): Buffer | undefined {
    const withHeader = (body: Buffer) => {
      const h = Buffer.alloc(4);
      h[1] = page;
      h.writeUInt16BE(body.length, 2);
      return Buffer.concat([h, body]);
    };
    switch (page) {
      case 0x00: return withHeader(Buffer.from([0x00, 0x80, 0x83, 0xb0]));
      case 0x80: return withHeader(Buffer.from(this.identity.serial, 'ascii'));
      case 0x83: {
        const naa = Buffer.from(this.identity.wwn, 'hex');
        const desc = Buffer.alloc(4);
        desc[0] = 0x01; // binary code set
        desc[1] = 0x03; // association: logical unit, designator type NAA
        desc[3] = naa.length;
        return withHeader(Buffer.concat([desc, naa]));
      }
      case 0xb0: {
        const body = Buffer.alloc(0x3c);
        body.writeUInt32BE(0xffff, 4); // MAXIMUM TRANSFER LENGTH: the device's own, larger than the host path's
        body.writeUInt32BE(128, 8); // OPTIMAL TRANSFER LENGTH
        return withHeader(body);
      }
      default: return undefined;
    }
  }

  /** READ CAPACITY(16) parameter data (SBC-3 §5.16.2), 32 bytes. */
  readCapacity16(): Buffer {
    const d = Buffer.alloc(32);
    d.writeBigUInt64BE(BigInt(this.identity.blockCount - 1), 0);
    d.writeUInt32BE(this.identity.logicalBlockSize, 8);
    d[13] = this.identity.physicalExponent & 0x0f;
    return d;
  }

  /** Commands with this opcode wait in the device until releaseHeld(). */
  holdOpcode(opcode: number): void {
    this.#holdOpcodes.add(opcode);
  }

  /** Resolves once `count` commands are held. */
  async waitHeld(count = 1): Promise<void> {
    while (this.#held.length < count) await new Promise<void>((resolve) => this.#heldWaiters.push(resolve));
  }

  /** Lets every held command (and later ones) complete. */
  releaseHeld(): void {
    this.#holdOpcodes.clear();
    for (const h of this.#held.splice(0)) h.release();
  }

  /** The next command gets `response` (a virtio-scsi response code) instead of an answer. */
  failNext(response: number): void {
    this.#failures.push(response);
  }

  async execute(cdb: Buffer, options: { dataOut?: Buffer; dataInLength?: number; timeoutMs?: number } = {}): Promise<PassthroughOutcome> {
    if (this.closed) throw new Error(`${this.description} is closed`);
    if (cdb.length < 6 || cdb.length > 32) throw new RangeError(`cdb of ${cdb.length} bytes`);
    const dataOut = options.dataOut ?? Buffer.alloc(0);
    const dataInLength = options.dataInLength ?? 0;
    if (dataOut.length > 0 && dataInLength > 0) throw new RangeError('bidirectional command');
    const copy = Buffer.from(cdb);
    this.received.push(copy);
    if (this.#holdOpcodes.has(copy[0]!)) {
      await new Promise<void>((release) => {
        this.#held.push({ cdb: copy, release });
        for (const w of this.#heldWaiters.splice(0)) w();
      });
    }
    const failure = this.#failures.shift();
    if (failure !== undefined) return { response: failure, status: 0, sense: Buffer.alloc(0), dataIn: Buffer.alloc(0), residual: dataInLength || dataOut.length, error: 'injected failure' };
    const answer = this.#answer(copy, dataOut);
    const dataIn = (answer.dataIn ?? Buffer.alloc(0)).subarray(0, dataInLength);
    const residual = dataInLength > 0 ? dataInLength - dataIn.length : dataOut.length - (answer.consumed ?? 0);
    return { response: 0, status: answer.status, sense: answer.sense ?? Buffer.alloc(0), dataIn: Buffer.from(dataIn), residual, error: '' };
  }

  #answer(cdb: Buffer, dataOut: Buffer): { status: number; sense?: Buffer; dataIn?: Buffer; consumed?: number } {
    const bs = this.identity.logicalBlockSize;
    const illegal = (asc: number) => ({ status: CHECK_CONDITION, sense: fixedSense(5, asc, 0) });
    const io = (lba: number, blocks: number, write: boolean) => {
      if (lba + blocks > this.identity.blockCount) return illegal(0x21); // LBA OUT OF RANGE
      const at = lba * bs;
      if (!write) return { status: GOOD, dataIn: Buffer.from(this.data.subarray(at, at + blocks * bs)) };
      const n = Math.min(dataOut.length, blocks * bs);
      dataOut.copy(this.data, at, 0, n);
      return { status: GOOD, consumed: n };
    };
    switch (cdb[0]) {
      case 0x00: return { status: GOOD }; // TEST UNIT READY
      case 0x12: { // INQUIRY
        if ((cdb[1]! & 1) === 0) return cdb[2] === 0 ? { status: GOOD, dataIn: this.standardInquiry() } : illegal(0x24);
        const page = this.vpdPage(cdb[2]!);
        return page ? { status: GOOD, dataIn: page } : illegal(0x24);
      }
      case 0x25: { // READ CAPACITY(10)
        const d = Buffer.alloc(8);
        d.writeUInt32BE(this.identity.blockCount - 1, 0);
        d.writeUInt32BE(bs, 4);
        return { status: GOOD, dataIn: d };
      }
      case 0x9e: return (cdb[1]! & 0x1f) === 0x10 ? { status: GOOD, dataIn: this.readCapacity16() } : illegal(0x24);
      case 0x28: return io(cdb.readUInt32BE(2), cdb.readUInt16BE(7), false);
      case 0x2a: return io(cdb.readUInt32BE(2), cdb.readUInt16BE(7), true);
      case 0x88: return io(Number(cdb.readBigUInt64BE(2)), cdb.readUInt32BE(10), false);
      case 0x8a: return io(Number(cdb.readBigUInt64BE(2)), cdb.readUInt32BE(10), true);
      case 0x35: return { status: GOOD }; // SYNCHRONIZE CACHE(10)
      default: return illegal(0x20); // INVALID COMMAND OPERATION CODE
    }
  }

  counters(): NativeLunCounters {
    return { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0, errors: 0 };
  }

  close(): void {
    this.closed = true;
  }
}
