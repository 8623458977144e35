// An in-memory Engine (hba/engine-api.ts) for tests of the callers: it keeps
// the topology, enforces the contract's idempotence rules and address limits,
// and records every call. No sockets, no files.
import { isDeepStrictEqual } from 'node:util';
import {
  MAX_LUNS_PER_TARGET,
  MAX_TARGETS,
  type ControllerInfo,
  type ControllerOptions,
  type Engine,
  type LunInfo,
  type LunSpec,
} from '../../hba/engine-api.ts';

/** One recorded call, for assertions. */
export interface EngineCall {
  method: 'createController' | 'deleteController' | 'attachLun' | 'detachLun' | 'resizeLun' | 'flushLun' | 'snapshotLun' | 'close';
  args: unknown[];
}

/** The double. `failOn` makes the named method reject (to test error paths). */
export class MemoryEngine implements Engine {
  readonly calls: EngineCall[] = [];
  closed = false;
  failOn: EngineCall['method'] | undefined;
  private readonly controllers = new Map<string, { opts: ControllerOptions; luns: Map<string, LunInfo> }>();

  private record(method: EngineCall['method'], ...args: unknown[]): void {
    if (this.closed && method !== 'close') throw new Error('engine is closed');
    this.calls.push({ method, args });
    if (this.failOn === method) throw new Error(`injected failure in ${method}`);
  }

  private controller(id: string) {
    const c = this.controllers.get(id);
    if (c === undefined) throw new Error(`no controller ${id}`);
    return c;
  }

  async createController(opts: ControllerOptions): Promise<void> {
    this.record('createController', opts);
    const existing = this.controllers.get(opts.id);
    if (existing !== undefined) {
      if (!isDeepStrictEqual(existing.opts, opts)) throw new Error(`controller ${opts.id} exists with other options`);
      return;
    }
    this.controllers.set(opts.id, { opts: { ...opts }, luns: new Map() });
  }

  async deleteController(id: string): Promise<void> {
    this.record('deleteController', id);
    this.controllers.delete(id);
  }

  async attachLun(controllerId: string, spec: LunSpec): Promise<void> {
    this.record('attachLun', controllerId, spec);
    if (spec.target < 0 || spec.target >= MAX_TARGETS || spec.lun < 0 || spec.lun >= MAX_LUNS_PER_TARGET) {
      throw new Error(`address ${spec.target}:${spec.lun} out of range`);
    }
    const c = this.controller(controllerId);
    const key = `${spec.target}:${spec.lun}`;
    const existing = c.luns.get(key);
    if (existing !== undefined) {
      const { reads: _r, writes: _w, bytesRead: _br, bytesWritten: _bw, ...existingSpec } = existing;
      if (!isDeepStrictEqual(existingSpec, spec)) throw new Error(`LUN ${key} on ${controllerId} exists with other parameters`);
      return;
    }
    c.luns.set(key, { ...structuredClone(spec), reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0 });
  }

  async detachLun(controllerId: string, target: number, lun: number): Promise<void> {
    this.record('detachLun', controllerId, target, lun);
    this.controllers.get(controllerId)?.luns.delete(`${target}:${lun}`);
  }

  async resizeLun(controllerId: string, target: number, lun: number, sizeBytes: number): Promise<void> {
    this.record('resizeLun', controllerId, target, lun, sizeBytes);
    const info = this.controller(controllerId).luns.get(`${target}:${lun}`);
    if (info === undefined) throw new Error(`no LUN ${target}:${lun} on ${controllerId}`);
    const b = info.backing;
    if (b.kind !== 'file' && b.kind !== 'memory') throw new Error(`LUN ${target}:${lun} on ${controllerId} is a passthrough LUN: its capacity is the device's`);
    info.backing = { ...b, sizeBytes };
  }

  async flushLun(controllerId: string, target: number, lun: number): Promise<void> {
    this.record('flushLun', controllerId, target, lun);
    if (!this.controller(controllerId).luns.has(`${target}:${lun}`)) throw new Error(`no LUN ${target}:${lun} on ${controllerId}`);
  }

  async snapshotLun(controllerId: string, target: number, lun: number, destinationPath: string): Promise<void> {
    this.record('snapshotLun', controllerId, target, lun, destinationPath);
    if (!this.controller(controllerId).luns.has(`${target}:${lun}`)) throw new Error(`no LUN ${target}:${lun} on ${controllerId}`);
  }

  list(): ControllerInfo[] {
    return [...this.controllers.values()].map(({ opts, luns }) => ({
      id: opts.id,
      socketPath: opts.socketPath,
      numRequestQueues: opts.numRequestQueues ?? 1,
      connected: false,
      luns: [...luns.values()].map((l) => structuredClone(l)),
    }));
  }

  async close(): Promise<void> {
    this.record('close');
    this.closed = true;
  }
}
