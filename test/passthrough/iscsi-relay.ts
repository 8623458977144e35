// A TCP relay between an iSCSI initiator and a target that records the
// operation code of every SCSI Command PDU the initiator sends (RFC 7143
// §11.3): the passthrough tests use it to prove a refused opcode never went
// on the wire. It follows the PDU framing (§11.2: 48-byte BHS, AHS, optional
// header digest, data segment padded to 4 bytes, optional data digest) and
// learns the negotiated digests from the target's final Login Response
// (§11.13, keys HeaderDigest/DataDigest, §13.1). When either side closes, so
// does the other.
import { createServer, connect, type Server, type Socket } from 'node:net';

/** A running relay. */
export interface IscsiRelay {
  /** "127.0.0.1:<port>" to give the initiator. */
  readonly portal: string;
  /** CDB byte 0 of every SCSI Command PDU seen, in order, over all connections. */
  readonly opcodes: number[];
  /** Connections accepted so far. */
  readonly connections: () => number;
  /** Closes the listener and every connection. */
  close(): Promise<void>;
}

interface Negotiated {
  fullFeature: boolean;
  headerDigest: boolean;
  dataDigest: boolean;
}

const BHS = 48;
const OP_SCSI_COMMAND = 0x01;
const OP_LOGIN_RESPONSE = 0x23;
const MAX_PDU = 16 << 20;

/** Splits a byte stream into PDUs and hands each to `onPdu`. */
class PduSplitter {
  #buffer: Buffer = Buffer.alloc(0);
  readonly #state: Negotiated;
  readonly #onPdu: (bhs: Buffer, data: Buffer) => void;

  constructor(state: Negotiated, onPdu: (bhs: Buffer, data: Buffer) => void) {
    this.#state = state;
    this.#onPdu = onPdu;
  }

  /** Feeds bytes; throws on a PDU this relay cannot frame. */
  push(chunk: Buffer): void {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    for (let guard = 0; guard < 100_000 && this.#buffer.length >= BHS; guard++) {
      const b = this.#buffer;
      const ahs = b[4]! * 4;
      const dataLength = b.readUIntBE(5, 3);
      const headerDigest = this.#state.fullFeature && this.#state.headerDigest ? 4 : 0;
      const padded = (dataLength + 3) & ~3;
      const dataDigest = this.#state.fullFeature && this.#state.dataDigest && dataLength > 0 ? 4 : 0;
      const total = BHS + ahs + headerDigest + padded + dataDigest;
      if (total > MAX_PDU) throw new Error(`PDU of ${total} bytes`);
      if (b.length < total) return;
      const dataStart = BHS + ahs + headerDigest;
      this.#onPdu(b.subarray(0, BHS), b.subarray(dataStart, dataStart + dataLength));
      this.#buffer = b.subarray(total);
    }
  }
}

/** `key=value\0...` text of a login data segment (RFC 7143 §6.1). */
function textKeys(data: Buffer): Map<string, string> {
  const keys = new Map<string, string>();
  for (const pair of data.toString('latin1').split('\0')) {
    const eq = pair.indexOf('=');
    if (eq > 0) keys.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return keys;
}

/** Starts a relay on 127.0.0.1:<free port> towards `target` ("host:port"). */
export async function startIscsiRelay(target: string): Promise<IscsiRelay> {
  const colon = target.lastIndexOf(':');
  const host = target.slice(0, colon);
  const port = Number(target.slice(colon + 1));
  const opcodes: number[] = [];
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((initiator) => {
    accepted++;
    const state: Negotiated = { fullFeature: false, headerDigest: false, dataDigest: false };
    const upstream = connect({ host, port });
    sockets.add(initiator);
    sockets.add(upstream);
    const closeBoth = (): void => {
      initiator.destroy();
      upstream.destroy();
      sockets.delete(initiator);
      sockets.delete(upstream);
    };
    const fromInitiator = new PduSplitter(state, (bhs) => {
      if ((bhs[0]! & 0x3f) === OP_SCSI_COMMAND) opcodes.push(bhs[32]!);
    });
    const fromTarget = new PduSplitter(state, (bhs, data) => {
      if ((bhs[0]! & 0x3f) !== OP_LOGIN_RESPONSE) return;
      const keys = textKeys(data);
      if (keys.has('HeaderDigest')) state.headerDigest = keys.get('HeaderDigest') === 'CRC32C';
      if (keys.has('DataDigest')) state.dataDigest = keys.get('DataDigest') === 'CRC32C';
      // T bit set and NSG = FullFeaturePhase (3): digests apply from the next PDU.
      if ((bhs[1]! & 0x80) !== 0 && (bhs[1]! & 0x03) === 3 && bhs[36] === 0) state.fullFeature = true;
    });
    initiator.on('data', (chunk: Buffer) => {
      try {
        fromInitiator.push(chunk);
      } catch {
        closeBoth();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      try {
        fromTarget.push(chunk);
      } catch {
        closeBoth();
        return;
      }
      initiator.write(chunk);
    });
    for (const s of [initiator, upstream]) {
      s.on('error', closeBoth);
      s.on('close', closeBoth);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const listenPort = typeof address === 'object' && address ? address.port : 0;
  return {
    portal: `127.0.0.1:${listenPort}`,
    opcodes,
    connections: () => accepted,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
