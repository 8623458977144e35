import { describe, expect, it } from 'vitest';
import {
  decodeHeader,
  decodeMessage,
  encodeBody,
  encodeReply,
  encodeRequest,
  HEADER_SIZE,
  HeaderFlags,
  ProtocolError,
  Request,
  REQUEST_RULES,
  requestName,
  validateMemTable,
  type MemoryRegion,
} from './protocol.ts';

function split(buf: Buffer): [Buffer, Buffer] {
  return [buf.subarray(0, HEADER_SIZE), buf.subarray(HEADER_SIZE)];
}

function decode(request: number, body: Buffer, fds = 0, flags: number = HeaderFlags.VERSION) {
  const [h, b] = split(encodeRequest(request, body, flags));
  return decodeMessage(h, b, fds);
}

const region = (gpa: bigint, size: bigint, uva: bigint): MemoryRegion => ({ guestPhysAddr: gpa, size, userAddr: uva, mmapOffset: 0n });
const addr = { index: 2, flags: 0, desc: 0x1000n, used: 0x2000n, avail: 0x3000n, log: 0n };

/** A well-formed body and fd count for every supported request. */
const good: Record<number, { body: Buffer; fds: number }> = {
  [Request.GET_FEATURES]: { body: Buffer.alloc(0), fds: 0 },
  [Request.SET_FEATURES]: { body: encodeBody.u64(1n << 32n), fds: 0 },
  [Request.SET_OWNER]: { body: Buffer.alloc(0), fds: 0 },
  [Request.RESET_OWNER]: { body: Buffer.alloc(0), fds: 0 },
  [Request.SET_MEM_TABLE]: { body: encodeBody.memTable([region(0n, 0x10000n, 0x7f0000000000n), region(0x100000000n, 0x10000n, 0x7f0000100000n)]), fds: 2 },
  [Request.SET_VRING_NUM]: { body: encodeBody.vringState({ index: 0, num: 128 }), fds: 0 },
  [Request.SET_VRING_ADDR]: { body: encodeBody.vringAddr(addr), fds: 0 },
  [Request.SET_VRING_BASE]: { body: encodeBody.vringState({ index: 1, num: 0 }), fds: 0 },
  [Request.GET_VRING_BASE]: { body: encodeBody.vringState({ index: 1, num: 0 }), fds: 0 },
  [Request.SET_VRING_KICK]: { body: encodeBody.u64(2n), fds: 1 },
  [Request.SET_VRING_CALL]: { body: encodeBody.u64(2n), fds: 1 },
  [Request.SET_VRING_ERR]: { body: encodeBody.u64(2n), fds: 1 },
  [Request.GET_PROTOCOL_FEATURES]: { body: Buffer.alloc(0), fds: 0 },
  [Request.SET_PROTOCOL_FEATURES]: { body: encodeBody.u64(0b1001n), fds: 0 },
  [Request.GET_QUEUE_NUM]: { body: Buffer.alloc(0), fds: 0 },
  [Request.SET_VRING_ENABLE]: { body: encodeBody.vringState({ index: 0, num: 1 }), fds: 0 },
  [Request.GET_CONFIG]: { body: encodeBody.config({ offset: 0, size: 36, flags: 0, payload: Buffer.alloc(36) }), fds: 0 },
  [Request.SET_CONFIG]: { body: encodeBody.config({ offset: 20, size: 4, flags: 0, payload: Buffer.from([96, 0, 0, 0]) }), fds: 0 },
  [Request.RESET_DEVICE]: { body: Buffer.alloc(0), fds: 0 },
};

describe('request table', () => {
  it('has a good example for every supported request', () => {
    expect(Object.keys(good).map(Number).sort((a, b) => a - b)).toEqual([...REQUEST_RULES.keys()].sort((a, b) => a - b));
  });

  it('matches the numbers of vhost-user.rst', () => {
    expect([Request.GET_FEATURES, Request.SET_MEM_TABLE, Request.SET_VRING_KICK, Request.GET_PROTOCOL_FEATURES, Request.SET_VRING_ENABLE]).toEqual([1, 5, 12, 15, 18]);
    expect([Request.SET_BACKEND_REQ_FD, Request.GET_CONFIG, Request.GET_INFLIGHT_FD, Request.RESET_DEVICE, Request.GET_MAX_MEM_SLOTS, Request.REM_MEM_REG]).toEqual([21, 24, 31, 34, 36, 38]);
    expect(requestName(11)).toBe('GET_VRING_BASE');
    expect(requestName(99)).toBe('unknown(99)');
  });
});

describe.each(Object.entries(good).map(([code, g]) => ({ code: Number(code), name: requestName(Number(code)), ...g })))('$name', ({ code, body, fds }) => {
  it('decodes a well-formed message', () => {
    const m = decode(code, body, fds);
    expect(m.request).toBe(code);
    expect(m.needReply).toBe(false);
  });

  it('sees NEED_REPLY', () => {
    expect(decode(code, body, fds, HeaderFlags.VERSION | HeaderFlags.NEED_REPLY).needReply).toBe(true);
  });

  it('rejects a body one byte longer', () => {
    expect(() => decode(code, Buffer.concat([body, Buffer.alloc(1)]), fds)).toThrow(ProtocolError);
  });

  it('rejects a truncated body', () => {
    if (body.length === 0) return;
    expect(() => decode(code, body.subarray(0, body.length - 1), fds)).toThrow(ProtocolError);
  });

  it('rejects one fd too many', () => {
    expect(() => decode(code, body, fds + 1)).toThrow(/fds attached/);
  });

  it('rejects one fd too few', () => {
    if (fds === 0) return;
    expect(() => decode(code, body, fds - 1)).toThrow(/fds attached/);
  });

  it('rejects a header whose size disagrees with the body', () => {
    const raw = encodeRequest(code, body);
    raw.writeUInt32LE(body.length + 8, 8);
    const [h, b] = split(raw);
    expect(() => decodeMessage(h, b, fds)).toThrow(/header size/);
  });
});

describe('header', () => {
  it('rejects version 0, 2 and 3', () => {
    for (const v of [0, 2, 3]) expect(() => decode(Request.GET_FEATURES, Buffer.alloc(0), 0, v)).toThrow(/version/);
  });
  it('rejects the reply flag on a request', () => {
    expect(() => decode(Request.GET_FEATURES, Buffer.alloc(0), 0, HeaderFlags.VERSION | HeaderFlags.REPLY)).toThrow(/reply flag/);
  });
  it('rejects undefined flag bits', () => {
    expect(() => decode(Request.GET_FEATURES, Buffer.alloc(0), 0, HeaderFlags.VERSION | 0x10)).toThrow(/undefined header flag/);
  });
  it('rejects unknown and unsupported requests', () => {
    expect(() => decode(99, Buffer.alloc(0))).toThrow(/unsupported request unknown\(99\)/);
    expect(() => decode(Request.SET_LOG_FD, Buffer.alloc(0), 1)).toThrow(/unsupported request SET_LOG_FD/);
    expect(() => decode(Request.SET_BACKEND_REQ_FD, Buffer.alloc(0), 1)).toThrow(/unsupported/);
    expect(() => decode(Request.ADD_MEM_REG, Buffer.alloc(40), 1)).toThrow(/unsupported/);
  });
  it('rejects a short header', () => {
    expect(() => decodeHeader(Buffer.alloc(8))).toThrow(ProtocolError);
  });
  it('encodes replies with version 1 and the reply flag', () => {
    const r = encodeReply(Request.GET_FEATURES, encodeBody.u64(5n));
    expect(r.readUInt32LE(0)).toBe(1);
    expect(r.readUInt32LE(4)).toBe(0x5);
    expect(r.readUInt32LE(8)).toBe(8);
    expect(r.readBigUInt64LE(12)).toBe(5n);
  });
});

describe('vring fd messages', () => {
  it('takes the queue index from bits 0-7', () => {
    const m = decode(Request.SET_VRING_CALL, encodeBody.u64(0xffn), 1);
    expect(m.body).toEqual({ kind: 'vringFile', queue: 255, noFd: false });
  });
  it('NOFD means exactly zero fds', () => {
    expect(decode(Request.SET_VRING_KICK, encodeBody.u64(0x102n), 0).body).toEqual({ kind: 'vringFile', queue: 2, noFd: true });
    expect(() => decode(Request.SET_VRING_KICK, encodeBody.u64(0x102n), 1)).toThrow(/1 fds attached, expected 0/);
  });
  it('rejects reserved bits', () => {
    expect(() => decode(Request.SET_VRING_KICK, encodeBody.u64(0x200n), 1)).toThrow(/reserved bits/);
    expect(() => decode(Request.SET_VRING_ERR, encodeBody.u64(1n << 63n), 1)).toThrow(/reserved bits/);
  });
});

describe('memory table', () => {
  it('needs exactly nregions fds and 8 + 32n bytes', () => {
    const body = encodeBody.memTable([region(0n, 4096n, 0x1000n)]);
    expect(decode(Request.SET_MEM_TABLE, body, 1).body).toMatchObject({ kind: 'memTable', regions: [{ size: 4096n }] });
    expect(() => decode(Request.SET_MEM_TABLE, body, 0)).toThrow(/0 fds attached, expected 1/);
    const lying = Buffer.from(body);
    lying.writeUInt32LE(2, 0);
    expect(() => decode(Request.SET_MEM_TABLE, lying, 2)).toThrow(/expected 72/);
  });
  it('rejects more than 8 regions before reading them', () => {
    const body = Buffer.alloc(8 + 9 * 32);
    body.writeUInt32LE(9, 0);
    expect(() => decode(Request.SET_MEM_TABLE, body, 8)).toThrow(/9 regions/);
  });
  it('rejects a body shorter than its head', () => {
    expect(() => decode(Request.SET_MEM_TABLE, Buffer.alloc(4), 0)).toThrow(/shorter than its 8-byte head/);
  });
  it('rejects empty, zero-sized, wrapping and overlapping regions', () => {
    expect(() => validateMemTable([])).toThrow(/no regions/);
    expect(() => validateMemTable([region(0n, 0n, 0n)])).toThrow(/size 0/);
    expect(() => validateMemTable([region(0xffff_ffff_ffff_f000n, 0x2000n, 0n)])).toThrow(/guest address \+ size overflows/);
    expect(() => validateMemTable([region(0n, 0x2000n, 0xffff_ffff_ffff_f000n)])).toThrow(/user address/);
    expect(() => validateMemTable([region(0n, 0x2000n, 0n), region(0x1000n, 0x2000n, 0x10000n)])).toThrow(/overlap in guest-physical/);
    expect(() => validateMemTable([region(0n, 0x2000n, 0n), region(0x10000n, 0x2000n, 0x1000n)])).toThrow(/overlap in user/);
    expect(() => validateMemTable([region(0xffff_ffff_ffff_f000n, 0x1000n, 0n)])).not.toThrow();
  });
});

describe('vring address and config', () => {
  it('rejects vring flags (logging was never offered)', () => {
    expect(() => decode(Request.SET_VRING_ADDR, encodeBody.vringAddr({ ...addr, flags: 1 }))).toThrow(/flags/);
  });
  it('rejects config accesses out of range, empty, or with undefined flags', () => {
    const cfg = (offset: number, size: number, flags = 0) => encodeBody.config({ offset, size, flags, payload: Buffer.alloc(size) });
    expect(() => decode(Request.GET_CONFIG, cfg(0, 0))).toThrow(/out of range/);
    expect(() => decode(Request.GET_CONFIG, cfg(250, 8))).toThrow(/out of range/);
    expect(() => decode(Request.GET_CONFIG, cfg(0, 4, 2))).toThrow(/flags 2/);
    const huge = cfg(0, 4);
    huge.writeUInt32LE(0xffffffff, 4);
    expect(() => decode(Request.GET_CONFIG, huge)).toThrow(ProtocolError);
  });
});
