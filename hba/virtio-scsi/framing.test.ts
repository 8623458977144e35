import { describe, expect, it } from 'vitest';
import type { ServiceFailure } from '../scsi/types.ts';
import { CMD_REQ_SIZE, CMD_RESP_SIZE, decodeCommandRequest, decodeLun, encodeLun, encodeScsiResult, encodeTransportResponse, FramingError, Response, SERVICE_FAILURE_RESPONSE } from './framing.ts';

function lun(bytes: number[]): Buffer {
  return Buffer.from(bytes);
}

describe('sizes', () => {
  it('match virtio 1.2 §5.6.6.1 with cdb_size 32 and sense_size 96', () => {
    expect(CMD_REQ_SIZE).toBe(51);
    expect(CMD_RESP_SIZE).toBe(108);
  });
});

describe('decodeLun', () => {
  it('accepts peripheral addressing for LUN < 256', () => {
    expect(decodeLun(lun([1, 5, 0, 7, 0, 0, 0, 0]))).toEqual({ ok: true, target: 5, lun: 7 });
  });
  it('accepts flat addressing (0x40) for any LUN, as Linux sends it', () => {
    expect(decodeLun(lun([1, 0, 0x40, 0, 0, 0, 0, 0]))).toEqual({ ok: true, target: 0, lun: 0 });
    expect(decodeLun(lun([1, 255, 0x41, 0x00, 0, 0, 0, 0]))).toEqual({ ok: true, target: 255, lun: 256 });
    expect(decodeLun(lun([1, 1, 0x7f, 0xff, 0, 0, 0, 0]))).toEqual({ ok: true, target: 1, lun: 16383 });
  });
  it('round-trips encodeLun', () => {
    for (const [t, l] of [[0, 0], [3, 255], [200, 256], [255, 16383]] as const) expect(decodeLun(encodeLun(t, l))).toEqual({ ok: true, target: t, lun: l });
  });
  it.each([
    ['byte 0 not 1', [0, 0, 0, 0, 0, 0, 0, 0], /byte 0/],
    ['byte 0 = 2', [2, 0, 0x40, 0, 0, 0, 0, 0], /byte 0/],
    ['logical unit addressing (0x80)', [1, 0, 0x80, 1, 0, 0, 0, 0], /addressing method/],
    ['extended addressing (0xc0)', [1, 0, 0xc0, 1, 0, 0, 0, 0], /addressing method/],
    ['peripheral with bus bits', [1, 0, 0x01, 1, 0, 0, 0, 0], /addressing method/],
    ['second level present', [1, 0, 0x40, 1, 0, 1, 0, 0], /bytes 4-7/],
  ])('rejects %s', (_n, bytes, reason) => {
    const r = decodeLun(lun(bytes));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });
});

describe('decodeCommandRequest', () => {
  const header = Buffer.alloc(CMD_REQ_SIZE);
  encodeLun(2, 300).copy(header, 0);
  header.writeBigUInt64LE(0x1122334455667788n, 8);
  header[16] = 1;
  header[19] = 0x28;
  header[50] = 0xee;

  it('splits header and data-out, copying the header fields', () => {
    const readable = Buffer.concat([header, Buffer.from('data-out')]);
    const req = decodeCommandRequest(readable);
    expect(req.tag).toBe(0x1122334455667788n);
    expect(req.taskAttr).toBe(1);
    expect(req.cdb.length).toBe(32);
    expect(req.cdb[0]).toBe(0x28);
    expect(req.cdb[31]).toBe(0xee);
    expect(req.dataOut.toString()).toBe('data-out');
    readable[19] = 0; // a later change of the chain buffer does not reach the copy
    expect(req.cdb[0]).toBe(0x28);
    expect(decodeLun(req.lunField)).toEqual({ ok: true, target: 2, lun: 300 });
  });

  it('rejects a chain shorter than the header', () => {
    expect(() => decodeCommandRequest(header.subarray(0, 50))).toThrow(FramingError);
    expect(() => decodeCommandRequest(Buffer.alloc(0))).toThrow(FramingError);
  });
});

describe('responses', () => {
  it('encodes status, sense and data-in with the data-in residual', () => {
    const sense = Buffer.from([0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0]);
    const out = encodeScsiResult({ status: 2, sense, dataIn: Buffer.from('abc') }, 0, CMD_RESP_SIZE + 10);
    expect(out.length).toBe(CMD_RESP_SIZE + 3);
    expect(out.readUInt32LE(0)).toBe(sense.length);
    expect(out.readUInt32LE(4)).toBe(7);
    expect(out[10]).toBe(2);
    expect(out[11]).toBe(Response.OK);
    expect(out.subarray(12, 12 + sense.length)).toEqual(sense);
    expect(out.subarray(CMD_RESP_SIZE).toString()).toBe('abc');
  });

  it('computes the data-out residual from dataOutConsumed', () => {
    const out = encodeScsiResult({ status: 0, dataOutConsumed: 512 }, 4096, CMD_RESP_SIZE);
    expect(out.readUInt32LE(4)).toBe(4096 - 512);
    expect(encodeScsiResult({ status: 0 }, 4096, CMD_RESP_SIZE).readUInt32LE(4)).toBe(0);
  });

  it('truncates data-in beyond the capacity and answers OVERRUN', () => {
    const out = encodeScsiResult({ status: 0, dataIn: Buffer.alloc(100, 1) }, 0, CMD_RESP_SIZE + 10);
    expect(out.length).toBe(CMD_RESP_SIZE + 10);
    expect(out[11]).toBe(Response.OVERRUN);
  });

  it('truncates sense beyond 96 bytes', () => {
    const out = encodeScsiResult({ status: 2, sense: Buffer.alloc(200, 9) }, 0, CMD_RESP_SIZE);
    expect(out.readUInt32LE(0)).toBe(96);
    expect(out.length).toBe(CMD_RESP_SIZE);
  });

  it('encodes a transport-only response', () => {
    const out = encodeTransportResponse(Response.BAD_TARGET, CMD_RESP_SIZE + 512);
    expect(out.length).toBe(CMD_RESP_SIZE);
    expect(out[11]).toBe(3);
  });

  it.each([
    ['bad-target', Response.BAD_TARGET],
    ['transport-failure', Response.TRANSPORT_FAILURE],
    ['aborted', Response.ABORTED],
    ['busy', Response.BUSY],
    ['reset', Response.RESET],
    ['target-failure', Response.TARGET_FAILURE],
    ['nexus-failure', Response.NEXUS_FAILURE],
    ['failure', Response.FAILURE],
  ] as [ServiceFailure, number][])('maps serviceFailure %s to response %i with status 0, no sense, no data', (failure, code) => {
    expect(SERVICE_FAILURE_RESPONSE[failure]).toBe(code);
    // Whatever else the result carries is not the device's answer and is dropped.
    const out = encodeScsiResult({ serviceFailure: failure, status: 2, sense: Buffer.alloc(18, 0x70), dataIn: Buffer.from('junk') }, 0, CMD_RESP_SIZE + 512);
    expect(out.length).toBe(CMD_RESP_SIZE);
    expect(out[11]).toBe(code);
    expect(out[10]).toBe(0);
    expect(out.readUInt32LE(0)).toBe(0);
    expect(out.subarray(12, CMD_RESP_SIZE).equals(Buffer.alloc(96))).toBe(true);
    expect(out.readUInt32LE(4)).toBe(512); // nothing transferred
  });

  it('a failed data-out command reports the whole data-out as residual', () => {
    const out = encodeScsiResult({ serviceFailure: 'aborted', status: 0, dataOutConsumed: 4096 }, 4096, CMD_RESP_SIZE);
    expect(out[11]).toBe(Response.ABORTED);
    expect(out.readUInt32LE(4)).toBe(4096);
  });

  it('rejects a writable part too small for the response', () => {
    expect(() => encodeTransportResponse(Response.OK, CMD_RESP_SIZE - 1)).toThrow(FramingError);
  });
});
