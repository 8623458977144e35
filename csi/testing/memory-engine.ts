// An in-memory Engine (hba/engine-api.ts) for tests of the CSI plugin: it
// keeps the topology and the idempotency rules of the real engine (same
// parameters → OK, different → ALREADY_EXISTS, absent detach → OK) and
// counts flushes, but moves no data and opens no socket.
import { stat } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import type { ControllerInfo, ControllerOptions, Engine, LunInfo, LunSpec } from '../../hba/engine-api.ts';
import { copyImage } from '../../hba/backends/copy.ts';
import { EngineError } from '../../hba/engine-errors.ts';

/** The Engine double; `flushes` lists "controller:target:lun" per FlushLun. */
export class MemoryEngine implements Engine {
  readonly controllers = new Map<string, { opts: ControllerOptions; luns: Map<string, LunInfo> }>();
  readonly flushes: string[] = [];

  async createController(opts: ControllerOptions): Promise<void> {
    const c = this.controllers.get(opts.id);
    if (c) {
      if (c.opts.socketPath !== opts.socketPath) throw new EngineError('ALREADY_EXISTS', `controller ${opts.id} exists with socket ${c.opts.socketPath}`);
      return;
    }
    this.controllers.set(opts.id, { opts: { ...opts }, luns: new Map() });
  }

  async deleteController(id: string): Promise<void> {
    this.controllers.delete(id);
  }

  #controller(id: string) {
    const c = this.controllers.get(id);
    if (!c) throw new EngineError('NOT_FOUND', `controller ${id} does not exist`);
    return c;
  }

  async attachLun(controllerId: string, spec: LunSpec): Promise<void> {
    const c = this.#controller(controllerId);
    const key = `${spec.target}:${spec.lun}`;
    const existing = c.luns.get(key);
    if (existing) {
      const { reads: _r, writes: _w, bytesRead: _br, bytesWritten: _bw, ...same } = existing;
      if (!isDeepStrictEqual(same, spec)) throw new EngineError('ALREADY_EXISTS', `target ${spec.target} lun ${spec.lun} of ${controllerId} is attached with other parameters`);
      return;
    }
    if (spec.backing.kind === 'file') {
      const st = await stat(spec.backing.path).catch(() => undefined);
      if (!st?.isFile()) throw new EngineError('NOT_FOUND', `backing file ${spec.backing.path} does not exist`);
    }
    c.luns.set(key, { ...structuredClone(spec), reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0 });
  }

  async detachLun(controllerId: string, target: number, lun: number): Promise<void> {
    this.controllers.get(controllerId)?.luns.delete(`${target}:${lun}`);
  }

  async resizeLun(controllerId: string, target: number, lun: number, sizeBytes: number): Promise<void> {
    const l = this.#controller(controllerId).luns.get(`${target}:${lun}`);
    if (!l) throw new EngineError('NOT_FOUND', `target ${target} lun ${lun} of ${controllerId} is not attached`);
    if (l.backing.kind !== 'file' && l.backing.kind !== 'memory') throw new EngineError('FAILED_PRECONDITION', `target ${target} lun ${lun} of ${controllerId} is a passthrough LUN: its capacity is the device's`);
    l.backing.sizeBytes = sizeBytes;
  }

  async flushLun(controllerId: string, target: number, lun: number): Promise<void> {
    if (!this.#controller(controllerId).luns.has(`${target}:${lun}`)) throw new EngineError('NOT_FOUND', `target ${target} lun ${lun} of ${controllerId} is not attached`);
    this.flushes.push(`${controllerId}:${target}:${lun}`);
  }

  /** Records the snapshot point and copies the image as the real engine does. */
  async snapshotLun(controllerId: string, target: number, lun: number, destinationPath: string): Promise<void> {
    const l = this.#controller(controllerId).luns.get(`${target}:${lun}`);
    if (!l) throw new EngineError('NOT_FOUND', `target ${target} lun ${lun} of ${controllerId} is not attached`);
    if (l.backing.kind !== 'file') throw new EngineError('FAILED_PRECONDITION', `target ${target} lun ${lun} has no file backing`);
    this.flushes.push(`${controllerId}:${target}:${lun}`);
    await copyImage(l.backing.path, destinationPath);
  }

  list(): ControllerInfo[] {
    return [...this.controllers.values()].map((c) => ({
      id: c.opts.id, socketPath: c.opts.socketPath, numRequestQueues: c.opts.numRequestQueues ?? 1, connected: false,
      luns: [...c.luns.values()].map((l) => structuredClone(l)),
    }));
  }

  async close(): Promise<void> {
    this.controllers.clear();
  }
}
