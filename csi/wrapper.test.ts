import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { GrpcError } from '../protos/grpc.ts';
import { Controller, CreateVolumeRequestSchema, Node } from '../protos/gen/csi/v1/csi_pb.ts';
import { EngineError } from '../hba/engine-errors.ts';
import { KeyedLocks } from './locks.ts';
import { toGrpcError } from './errors.ts';
import { createCallWrapper, lockKeysOf, redactedRequest } from './wrapper.ts';

function capture(level = 'info') {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk))); cb(); } });
  return { log: pino({ level }, stream), lines };
}

describe('call wrapper', () => {
  it('answers ABORTED to a second call on the same volume while the first runs', async () => {
    const { log, lines } = capture();
    const wrap = createCallWrapper({ log, locks: new KeyedLocks(), services: [Controller, Node] });
    let finish!: () => void;
    const first = wrap('NodePublishVolume', () => new Promise((r) => { finish = () => r('done'); }), { volumeId: 'vol-1' });
    await expect(wrap('NodeUnpublishVolume', async () => 'x', { volumeId: 'vol-1' })).rejects.toMatchObject({ code: grpc.status.ABORTED });
    await expect(wrap('NodePublishVolume', async () => 'other', { volumeId: 'vol-2' })).resolves.toBe('other');
    finish();
    await expect(first).resolves.toBe('done');
    // Released after completion: the same volume works again.
    await expect(wrap('NodeUnpublishVolume', async () => 'again', { volumeId: 'vol-1' })).resolves.toBe('again');
    expect(lines.map((l) => [l.method, l.volume, l.code])).toContainEqual(['NodeUnpublishVolume', 'vol-1', 'ABORTED']);
    expect(lines.every((l) => typeof l.ms === 'number')).toBe(true);
  });

  it('releases the lock when the call fails', async () => {
    const { log } = capture();
    const locks = new KeyedLocks();
    const wrap = createCallWrapper({ log, locks, services: [] });
    await expect(wrap('DeleteVolume', async () => { throw new Error('disk on fire'); }, { volumeId: 'vol-9' })).rejects.toMatchObject({ code: grpc.status.INTERNAL, message: 'disk on fire' });
    expect(locks.isHeld('volume:vol-9')).toBe(false);
  });

  it('locks the name on CreateVolume and the source volume on clones and snapshots', () => {
    expect(lockKeysOf('CreateVolume', { name: 'pvc-1', volumeContentSource: { type: { case: 'volume', value: { volumeId: 'vol-a' } } } })).toEqual(['volume-name:pvc-1', 'volume:vol-a']);
    expect(lockKeysOf('CreateSnapshot', { name: 's', sourceVolumeId: 'vol-a' })).toEqual(['snapshot-name:s', 'volume:vol-a']);
    expect(lockKeysOf('GetCapacity', {})).toEqual([]);
  });

  it('maps errors onto gRPC codes and logs the code', async () => {
    const { log, lines } = capture();
    const wrap = createCallWrapper({ log, locks: new KeyedLocks(), services: [] });
    const cases: [unknown, number][] = [
      [new GrpcError(grpc.status.NOT_FOUND, 'no such volume'), grpc.status.NOT_FOUND],
      [new EngineError('ALREADY_EXISTS', 'lun busy'), grpc.status.ALREADY_EXISTS],
      [Object.assign(new Error('14 UNAVAILABLE: connect'), { code: grpc.status.UNAVAILABLE, details: 'connect ENOENT', metadata: new grpc.Metadata() }), grpc.status.UNAVAILABLE],
      [Object.assign(new Error('no space'), { code: 'ENOSPC' }), grpc.status.RESOURCE_EXHAUSTED],
      ['a string', grpc.status.INTERNAL],
    ];
    for (const [err, code] of cases) {
      await expect(wrap('CreateVolume', async () => { throw err; }, { name: 'n' })).rejects.toMatchObject({ code });
    }
    expect(lines.map((l) => l.code)).toEqual(['NOT_FOUND', 'ALREADY_EXISTS', 'UNAVAILABLE', 'RESOURCE_EXHAUSTED', 'INTERNAL']);
    expect(toGrpcError(new EngineError('NOT_FOUND', 'x')).message).toBe('engine: x');
  });

  it('never logs secrets, even at debug level', async () => {
    const { log, lines } = capture('debug');
    const wrap = createCallWrapper({ log, locks: new KeyedLocks(), services: [Controller] });
    const req = create(CreateVolumeRequestSchema, { name: 'pvc-1', secrets: { password: 'hunter2', token: 't0ps3cret' }, parameters: { ioProfile: 'shared' } });
    await wrap('CreateVolume', async () => ({}), req);
    const text = JSON.stringify(lines);
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain('t0ps3cret');
    expect(text).toContain('<redacted 2 keys>');
    expect(redactedRequest(CreateVolumeRequestSchema, req)).toMatchObject({ name: 'pvc-1', parameters: { ioProfile: 'shared' } });
  });
});
