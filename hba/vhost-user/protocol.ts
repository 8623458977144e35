// vhost-user wire format (QEMU docs/interop/vhost-user.rst): request codes,
// header flags, feature bits, and the payload structs with a pure decoder and
// a validator side by side. Nothing here touches sockets, fds or devices: the
// session (session.ts) feeds RawMessages through `decodeMessage` and acts on
// the typed result. All numbers are little-endian (x86-64/aarch64 native).

/** Front-end → back-end request codes ("Front-end message types"). */
export const Request = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

/** Name of a request code, for logs ("unknown(99)" for anything else). */
export function requestName(code: number): string {
  for (const [name, value] of Object.entries(Request)) if (value === code) return name;
  return `unknown(${code})`;
}

/** Header flag bits ("Header"): version in bits 0-1, reply bit 2, need_reply bit 3. */
export const HeaderFlags = {
  VERSION_MASK: 0x3,
  VERSION: 0x1,
  REPLY: 0x4,
  NEED_REPLY: 0x8,
} as const;

/** Size of the request/flags/size header. */
export const HEADER_SIZE = 12;

/** VHOST_USER_F_PROTOCOL_FEATURES: the reused virtio feature bit 30. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

/** Protocol feature bits ("Protocol features"). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** Bit 8 of the u64 of SET_VRING_KICK/CALL/ERR: no fd in the ancillary data. */
export const VRING_NOFD_FLAG = 0x100n;
/** Bits 0-7 of the u64 of SET_VRING_KICK/CALL/ERR: the queue index. */
export const VRING_INDEX_MASK = 0xffn;

/** Largest config space access the protocol allows (QEMU VHOST_USER_MAX_CONFIG_SIZE). */
export const MAX_CONFIG_SIZE = 256;
/** Regions per SET_MEM_TABLE without CONFIGURE_MEM_SLOTS (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEM_TABLE_REGIONS = 8;

const U64_SIZE = 8;
const VRING_STATE_SIZE = 8;
const VRING_ADDR_SIZE = 40;
const MEM_TABLE_HEAD_SIZE = 8;
const MEM_REGION_SIZE = 32;
const CONFIG_HEAD_SIZE = 12;

/** A message the guest side got wrong: the session closes the connection. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

function fail(message: string): never {
  throw new ProtocolError(message);
}

// ---------------------------------------------------------------------------
// Header

/** The 12-byte message header. */
export interface MessageHeader {
  request: number;
  flags: number;
  size: number;
}

/** Decodes the header; `buf` must be exactly HEADER_SIZE bytes. */
export function decodeHeader(buf: Buffer): MessageHeader {
  if (buf.length !== HEADER_SIZE) fail(`header is ${buf.length} bytes, expected ${HEADER_SIZE}`);
  return { request: buf.readUInt32LE(0), flags: buf.readUInt32LE(4), size: buf.readUInt32LE(8) };
}

/** A request from the front-end: version 1, reply bit clear, no undefined flag bits. */
export function validateRequestHeader(h: MessageHeader): void {
  if ((h.flags & HeaderFlags.VERSION_MASK) !== HeaderFlags.VERSION) fail(`unsupported version ${h.flags & HeaderFlags.VERSION_MASK}`);
  if (h.flags & HeaderFlags.REPLY) fail('reply flag set on a request');
  const known = HeaderFlags.VERSION_MASK | HeaderFlags.REPLY | HeaderFlags.NEED_REPLY;
  if ((h.flags & ~known) !== 0) fail(`undefined header flag bits 0x${((h.flags & ~known) >>> 0).toString(16)}`);
}

/** Encodes a back-end reply: header (version 1 | REPLY) followed by `payload`. */
export function encodeReply(request: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(HEADER_SIZE + payload.length);
  out.writeUInt32LE(request, 0);
  out.writeUInt32LE(HeaderFlags.VERSION | HeaderFlags.REPLY, 4);
  out.writeUInt32LE(payload.length, 8);
  payload.copy(out, HEADER_SIZE);
  return out;
}

// ---------------------------------------------------------------------------
// Payload structs

/** "A vring state description". */
export interface VringState {
  index: number;
  num: number;
}

/** "A vring address description" (struct vhost_vring_addr). */
export interface VringAddress {
  index: number;
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}

/** One entry of "Memory regions description". */
export interface MemoryRegion {
  guestPhysAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
}

/** "Virtio device config space" access. */
export interface ConfigAccess {
  offset: number;
  size: number;
  flags: number;
  payload: Buffer;
}

/** VHOST_VRING_F_LOG: the only defined vring address flag (used-ring logging). */
export const VRING_F_LOG = 0x1;
const U64_MAX = (1n << 64n) - 1n;

export function encodeU64(value: bigint): Buffer {
  const b = Buffer.alloc(U64_SIZE);
  b.writeBigUInt64LE(value);
  return b;
}

export function encodeVringState(s: VringState): Buffer {
  const b = Buffer.alloc(VRING_STATE_SIZE);
  b.writeUInt32LE(s.index, 0);
  b.writeUInt32LE(s.num, 4);
  return b;
}

export function encodeConfig(c: ConfigAccess): Buffer {
  const b = Buffer.alloc(CONFIG_HEAD_SIZE + c.payload.length);
  b.writeUInt32LE(c.offset, 0);
  b.writeUInt32LE(c.size, 4);
  b.writeUInt32LE(c.flags, 8);
  c.payload.copy(b, CONFIG_HEAD_SIZE);
  return b;
}

function decodeVringAddr(b: Buffer): VringAddress {
  return {
    index: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    desc: b.readBigUInt64LE(8),
    used: b.readBigUInt64LE(16),
    avail: b.readBigUInt64LE(24),
    log: b.readBigUInt64LE(32),
  };
}

/** Only VHOST_VRING_F_LOG is defined; we never offered logging, so flags must be 0. */
function validateVringAddr(a: VringAddress): void {
  if (a.flags !== 0) fail(`vring address flags 0x${a.flags.toString(16)} (logging not negotiated)`);
}

function decodeMemTable(b: Buffer): MemoryRegion[] {
  const regions: MemoryRegion[] = [];
  const n = b.readUInt32LE(0);
  for (let i = 0; i < n; i++) {
    const o = MEM_TABLE_HEAD_SIZE + i * MEM_REGION_SIZE;
    regions.push({
      guestPhysAddr: b.readBigUInt64LE(o),
      size: b.readBigUInt64LE(o + 8),
      userAddr: b.readBigUInt64LE(o + 16),
      mmapOffset: b.readBigUInt64LE(o + 24),
    });
  }
  return regions;
}

/** Each region non-empty, no 64-bit wrap of gpa+size, uva+size or offset+size,
 * and no two regions overlapping in guest-physical or user address space. */
export function validateMemTable(regions: MemoryRegion[]): void {
  if (regions.length === 0) fail('memory table has no regions');
  for (const [i, r] of regions.entries()) {
    if (r.size === 0n) fail(`region ${i} has size 0`);
    if (r.guestPhysAddr + r.size - 1n > U64_MAX) fail(`region ${i}: guest address + size overflows`);
    if (r.userAddr + r.size - 1n > U64_MAX) fail(`region ${i}: user address + size overflows`);
    if (r.mmapOffset + r.size - 1n > U64_MAX) fail(`region ${i}: mmap offset + size overflows`);
  }
  for (let i = 0; i < regions.length; i++) {
    for (let j = i + 1; j < regions.length; j++) {
      const a = regions[i]!;
      const b = regions[j]!;
      if (a.guestPhysAddr < b.guestPhysAddr + b.size && b.guestPhysAddr < a.guestPhysAddr + a.size) fail(`regions ${i} and ${j} overlap in guest-physical space`);
      if (a.userAddr < b.userAddr + b.size && b.userAddr < a.userAddr + a.size) fail(`regions ${i} and ${j} overlap in user address space`);
    }
  }
}

function decodeConfig(b: Buffer): ConfigAccess {
  return { offset: b.readUInt32LE(0), size: b.readUInt32LE(4), flags: b.readUInt32LE(8), payload: Buffer.from(b.subarray(CONFIG_HEAD_SIZE)) };
}

/** offset + size within MAX_CONFIG_SIZE, flags 0 (writable fields) or 1 (migration). */
function validateConfig(c: ConfigAccess): void {
  if (c.size === 0 || c.size > MAX_CONFIG_SIZE || c.offset > MAX_CONFIG_SIZE - c.size) fail(`config access offset ${c.offset} size ${c.size} out of range`);
  if (c.flags > 1) fail(`config flags ${c.flags} undefined`);
}

/** Decodes the u64 of SET_VRING_KICK/CALL/ERR; every bit but index and NOFD must be 0. */
function decodeVringFile(b: Buffer): { queue: number; noFd: boolean } {
  const v = b.readBigUInt64LE(0);
  if ((v & ~(VRING_INDEX_MASK | VRING_NOFD_FLAG)) !== 0n) fail(`vring fd payload 0x${v.toString(16)} has reserved bits set`);
  return { queue: Number(v & VRING_INDEX_MASK), noFd: (v & VRING_NOFD_FLAG) !== 0n };
}

// ---------------------------------------------------------------------------
// The table: per request, exact body size and allowed fd count

/** A decoded, structurally valid request (semantic checks against the device
 * state, such as queue index < numQueues, are the session's). */
export type DecodedBody =
  | { kind: 'none' }
  | { kind: 'u64'; value: bigint }
  | { kind: 'vringState'; state: VringState }
  | { kind: 'vringAddr'; addr: VringAddress }
  | { kind: 'memTable'; regions: MemoryRegion[] }
  | { kind: 'vringFile'; queue: number; noFd: boolean }
  | { kind: 'config'; config: ConfigAccess };

/** How one request is framed: exact body size and exact fd count. */
export interface RequestRule {
  /** Exact body size, or a function of the body (checked to be long enough first). */
  bodySize: number | ((body: Buffer) => number);
  /** Minimum bytes needed before bodySize() can be computed. */
  bodyHead?: number;
  /** Exact number of fds allowed, given the (size-checked) body. */
  fds: number | ((body: Buffer) => number);
  decode: (body: Buffer) => DecodedBody;
}

const none = (): DecodedBody => ({ kind: 'none' });
const u64 = (b: Buffer): DecodedBody => ({ kind: 'u64', value: b.readBigUInt64LE(0) });
const vringState = (b: Buffer): DecodedBody => ({ kind: 'vringState', state: { index: b.readUInt32LE(0), num: b.readUInt32LE(4) } });
const vringFile = (b: Buffer): DecodedBody => ({ kind: 'vringFile', ...decodeVringFile(b) });
const vringFileFds = (b: Buffer): number => ((b.readBigUInt64LE(0) & VRING_NOFD_FLAG) !== 0n ? 0 : 1);

/** Rules for every request this back-end understands. Requests that need a
 * feature we never offer (logging, backend channel, inflight, mem slots...)
 * are absent: the session closes the connection on them as "unknown". */
/** GET_CONFIG and SET_CONFIG carry the same body: a config head plus `size` bytes. */
const CONFIG_MESSAGE: RequestRule = {
  bodyHead: CONFIG_HEAD_SIZE,
  bodySize: (b) => CONFIG_HEAD_SIZE + b.readUInt32LE(4),
  fds: 0,
  decode: (b) => {
    const config = decodeConfig(b);
    validateConfig(config);
    return { kind: 'config', config };
  },
};

export const REQUEST_RULES: ReadonlyMap<number, RequestRule> = new Map<number, RequestRule>([
  [Request.GET_FEATURES, { bodySize: 0, fds: 0, decode: none }],
  [Request.SET_FEATURES, { bodySize: U64_SIZE, fds: 0, decode: u64 }],
  [Request.SET_OWNER, { bodySize: 0, fds: 0, decode: none }],
  [Request.RESET_OWNER, { bodySize: 0, fds: 0, decode: none }],
  [
    Request.SET_MEM_TABLE,
    {
      bodyHead: MEM_TABLE_HEAD_SIZE,
      bodySize: (b) => {
        const n = b.readUInt32LE(0);
        if (n > MAX_MEM_TABLE_REGIONS) fail(`memory table has ${n} regions (max ${MAX_MEM_TABLE_REGIONS})`);
        return MEM_TABLE_HEAD_SIZE + n * MEM_REGION_SIZE;
      },
      fds: (b) => b.readUInt32LE(0),
      decode: (b) => {
        const regions = decodeMemTable(b);
        validateMemTable(regions);
        return { kind: 'memTable', regions };
      },
    },
  ],
  [Request.SET_VRING_NUM, { bodySize: VRING_STATE_SIZE, fds: 0, decode: vringState }],
  [
    Request.SET_VRING_ADDR,
    {
      bodySize: VRING_ADDR_SIZE,
      fds: 0,
      decode: (b) => {
        const addr = decodeVringAddr(b);
        validateVringAddr(addr);
        return { kind: 'vringAddr', addr };
      },
    },
  ],
  [Request.SET_VRING_BASE, { bodySize: VRING_STATE_SIZE, fds: 0, decode: vringState }],
  [Request.GET_VRING_BASE, { bodySize: VRING_STATE_SIZE, fds: 0, decode: vringState }],
  [Request.SET_VRING_KICK, { bodySize: U64_SIZE, fds: vringFileFds, decode: vringFile }],
  [Request.SET_VRING_CALL, { bodySize: U64_SIZE, fds: vringFileFds, decode: vringFile }],
  [Request.SET_VRING_ERR, { bodySize: U64_SIZE, fds: vringFileFds, decode: vringFile }],
  [Request.GET_PROTOCOL_FEATURES, { bodySize: 0, fds: 0, decode: none }],
  [Request.SET_PROTOCOL_FEATURES, { bodySize: U64_SIZE, fds: 0, decode: u64 }],
  [Request.GET_QUEUE_NUM, { bodySize: 0, fds: 0, decode: none }],
  [Request.SET_VRING_ENABLE, { bodySize: VRING_STATE_SIZE, fds: 0, decode: vringState }],
  [Request.GET_CONFIG, CONFIG_MESSAGE],
  [Request.SET_CONFIG, CONFIG_MESSAGE],
  [Request.RESET_DEVICE, { bodySize: 0, fds: 0, decode: none }],
]);

/** fd counts of requests we reject as unsupported, for documentation and for
 * the hostile-input tests (vhost-user.rst "Communication"): these carry fds
 * that must be closed when the session refuses them. */
export const UNSUPPORTED_REQUEST_FDS: ReadonlyMap<number, number> = new Map([
  [Request.SET_LOG_FD, 1],
  [Request.SET_BACKEND_REQ_FD, 1],
  [Request.SET_LOG_BASE, 1],
  [Request.SET_INFLIGHT_FD, 1],
  [Request.ADD_MEM_REG, 1],
]);

/** A fully checked request, ready for the session to apply. */
export interface DecodedMessage {
  request: number;
  name: string;
  needReply: boolean;
  body: DecodedBody;
}

/** The request pipeline up to "validate": header → known request → exact body
 * size → allowed fd count → decode + structural validation. Throws
 * ProtocolError; never takes ownership of `fdCount` fds (the caller closes them
 * on error). */
export function decodeMessage(header: Buffer, body: Buffer, fdCount: number): DecodedMessage {
  const h = decodeHeader(header);
  validateRequestHeader(h);
  const name = requestName(h.request);
  const rule = REQUEST_RULES.get(h.request);
  if (!rule) fail(`unsupported request ${name}`);
  if (h.size !== body.length) fail(`${name}: header size ${h.size} but body is ${body.length} bytes`);
  if (rule.bodyHead !== undefined && body.length < rule.bodyHead) fail(`${name}: body of ${body.length} bytes is shorter than its ${rule.bodyHead}-byte head`);
  const expected = typeof rule.bodySize === 'number' ? rule.bodySize : rule.bodySize(body);
  if (body.length !== expected) fail(`${name}: body is ${body.length} bytes, expected ${expected}`);
  const fds = typeof rule.fds === 'number' ? rule.fds : rule.fds(body);
  if (fdCount !== fds) fail(`${name}: ${fdCount} fds attached, expected ${fds}`);
  return { request: h.request, name, needReply: (h.flags & HeaderFlags.NEED_REPLY) !== 0, body: rule.decode(body) };
}

/** Encodes a request (front-end side), for the test front-end and tests. */
export function encodeRequest(request: number, body: Buffer, flags: number = HeaderFlags.VERSION): Buffer {
  const out = Buffer.alloc(HEADER_SIZE + body.length);
  out.writeUInt32LE(request, 0);
  out.writeUInt32LE(flags, 4);
  out.writeUInt32LE(body.length, 8);
  body.copy(out, HEADER_SIZE);
  return out;
}

/** Body encoders for the front-end side (test front-end, tests). */
export const encodeBody = {
  u64: encodeU64,
  vringState: encodeVringState,
  vringAddr(a: VringAddress): Buffer {
    const b = Buffer.alloc(VRING_ADDR_SIZE);
    b.writeUInt32LE(a.index, 0);
    b.writeUInt32LE(a.flags, 4);
    b.writeBigUInt64LE(a.desc, 8);
    b.writeBigUInt64LE(a.used, 16);
    b.writeBigUInt64LE(a.avail, 24);
    b.writeBigUInt64LE(a.log, 32);
    return b;
  },
  memTable(regions: MemoryRegion[]): Buffer {
    const b = Buffer.alloc(MEM_TABLE_HEAD_SIZE + regions.length * MEM_REGION_SIZE);
    b.writeUInt32LE(regions.length, 0);
    regions.forEach((r, i) => {
      const o = MEM_TABLE_HEAD_SIZE + i * MEM_REGION_SIZE;
      b.writeBigUInt64LE(r.guestPhysAddr, o);
      b.writeBigUInt64LE(r.size, o + 8);
      b.writeBigUInt64LE(r.userAddr, o + 16);
      b.writeBigUInt64LE(r.mmapOffset, o + 24);
    });
    return b;
  },
  config: encodeConfig,
};
