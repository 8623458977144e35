import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addService, createClient, GrpcError } from '../../protos/grpc.ts';
import { EngineService } from '../../protos/gen/vhba/hba/v1/hba_pb.ts';

describe('protobuf-es service over grpc-js', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhba-grpc-'));
  const address = `unix://${join(dir, 'api.sock')}`;
  const server = new grpc.Server();
  const calls: string[] = [];

  beforeAll(async () => {
    addService(
      server,
      EngineService,
      {
        async createController(req) {
          if (!req.id) throw new GrpcError(grpc.status.INVALID_ARGUMENT, 'id is required');
          return {};
        },
        async deleteController() { return {}; },
        async attachLun(req) {
          return req.address?.lun === 300 ? {} : Promise.reject(new Error('boom'));
        },
        async detachLun() { return {}; },
        async resizeLun() { return {}; },
        async flushLun() { return {}; },
        async snapshotLun() { return {}; },
        async listControllers() {
          return { controllers: [{ id: 'vm/hba0', socketPath: '/x', luns: [{ address: { target: 1, lun: 300 }, bytesRead: 1n << 40n }] }] };
        },
        async getInfo() { return { version: '1', ready: true }; },
      },
      async (method, run) => { calls.push(method); return run(); },
    );
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
  });
  afterAll(() => { server.forceShutdown(); rmSync(dir, { recursive: true, force: true }); });

  it('round-trips messages, 64-bit fields included', async () => {
    const client = createClient(EngineService, address);
    const res = await client.listControllers({});
    expect(res.controllers[0]?.luns[0]?.address?.lun).toBe(300);
    expect(res.controllers[0]?.luns[0]?.bytesRead).toBe(1n << 40n);
    expect((await client.getInfo({})).ready).toBe(true);
    client.close();
    expect(calls).toEqual(['ListControllers', 'GetInfo']);
  });

  it('carries GrpcError codes and maps other errors to INTERNAL', async () => {
    const client = createClient(EngineService, address);
    await expect(client.createController({ id: '' })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'id is required' });
    await expect(client.attachLun({ address: { lun: 1 } })).rejects.toMatchObject({ code: grpc.status.INTERNAL, details: 'boom' });
    await expect(client.attachLun({ address: { lun: 300 } })).resolves.toBeDefined();
    client.close();
  });
});
