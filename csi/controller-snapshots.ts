// Snapshots and volume images for the Controller service. A snapshot is a
// thin copy of a volume's image under <data-dir>/snapshots (copy.ts: reflink
// where the file system has it, else a hole-preserving copy). A snapshot of a
// LUN attached in the engine is crash-consistent and one point in time: the
// engine makes the copy while that LUN's I/O is held (SnapshotLun).
import { mkdir, open, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { syncDir } from '../lib/atomic-file.ts';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { SnapshotSchema } from '../protos/gen/csi/v1/csi_pb.ts';
import { copyImage } from '../hba/backends/copy.ts';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from './errors.ts';
import { findLunsByBacking } from './engine-client.ts';
import { isOurId, newId, type SnapshotRecord, type VolumeRecord } from './volumes.ts';
import type { ControllerDeps } from './controller.ts';
import { page, passthroughRefusal } from './controller.ts';

async function removeIfPresent(path: string): Promise<void> {
  await unlink(path).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
}

/** Copies a volume's image to `destination` at one point in time. When a
 * LUN of the engine serves the image, the engine makes the copy while that
 * LUN's I/O is held (SnapshotLun: drain, flush, copy, resume), so the copy
 * is crash-consistent even while the guest writes; otherwise the image is
 * idle and copied directly. Without an engine connection a published volume
 * is refused. */
export async function copyVolumeImage(deps: ControllerDeps, volume: VolumeRecord, destination: string): Promise<void> {
  if (!deps.engine) {
    const nodes = Object.keys(volume.published);
    if (nodes.length > 0) throw failedPrecondition(`volume ${volume.id} is published to ${nodes.join(', ')} and this controller has no --engine-endpoint to hold its I/O; a snapshot would not be crash-consistent`);
    await copyImage(volume.path, destination);
    return;
  }
  const luns = await findLunsByBacking(deps.engine, volume.path);
  if (luns.length > 1) throw failedPrecondition(`volume ${volume.id} is served by ${luns.length} LUNs; a point-in-time copy needs exactly one writer`);
  const served = luns[0];
  if (served) {
    await deps.engine.snapshotLun({ controllerId: served.controller.id, address: served.lun.address, destinationPath: destination });
  } else {
    await copyImage(volume.path, destination);
  }
}

/** Creates (or re-creates, after a crash) the image of a volume record: a
 * sparse file of its capacity, or a copy of its content source grown to it. */
export async function createVolumeImage(deps: ControllerDeps, record: VolumeRecord): Promise<void> {
  await mkdir(dirname(record.path), { recursive: true, mode: 0o700 });
  await removeIfPresent(record.path); // a half-made image from a crash
  const src = record.contentSource;
  if (src?.kind === 'snapshot') {
    const snap = await deps.snapshots.get(src.id);
    if (!snap) throw notFound(`snapshot ${src.id} disappeared while creating volume ${record.id}`);
    await copyImage(snap.path, record.path);
  } else if (src?.kind === 'volume') {
    const source = await deps.volumes.get(src.id);
    if (!source) throw notFound(`volume ${src.id} disappeared while cloning it into ${record.id}`);
    await copyVolumeImage(deps, source, record.path);
  }
  const fh = await open(record.path, src ? 'r+' : 'wx', 0o600);
  try {
    const { size } = await fh.stat();
    if (size < record.capacityBytes) await fh.truncate(record.capacityBytes); // a hole, not zeros
    await fh.sync();
  } finally {
    await fh.close();
  }
  await syncDir(dirname(record.path));
}

function snapshotMessage(s: SnapshotRecord): MessageInitShape<typeof SnapshotSchema> {
  return {
    snapshotId: s.id,
    sourceVolumeId: s.sourceVolumeId,
    sizeBytes: BigInt(s.sizeBytes),
    creationTime: { seconds: BigInt(Math.floor(s.createdAtMs / 1000)), nanos: (s.createdAtMs % 1000) * 1e6 },
    readyToUse: s.state === 'ready',
  };
}

/** The snapshot RPCs of the Controller service. */
export function snapshotMethods(deps: ControllerDeps, getVolume: (id: string, field?: string) => Promise<VolumeRecord>) {
  const snapshotsDir = join(deps.dataDir, 'snapshots');

  async function materialize(s: SnapshotRecord, source: VolumeRecord): Promise<void> {
    await mkdir(snapshotsDir, { recursive: true, mode: 0o700 });
    await removeIfPresent(s.path);
    await copyVolumeImage(deps, source, s.path);
    await syncDir(snapshotsDir);
    s.state = 'ready';
    await deps.snapshots.put(s);
  }

  return {
    async createSnapshot(req: { name: string; sourceVolumeId: string; parameters: Record<string, string> }) {
      if (!req.name) throw invalidArgument('name is required');
      if (req.name.length > 128) throw invalidArgument('name is longer than 128 characters');
      if (!req.sourceVolumeId) throw invalidArgument('source_volume_id is required');
      const unknown = Object.keys(req.parameters).filter((k) => !k.startsWith('csi.storage.k8s.io/'));
      if (unknown.length > 0) throw invalidArgument(`snapshot parameters ${unknown.join(', ')} are not known; vhba snapshots take no parameters`);
      const existing = (await deps.snapshots.list()).find((s) => s.name === req.name);
      if (existing) {
        if (existing.sourceVolumeId !== req.sourceVolumeId) {
          throw alreadyExists(`snapshot ${JSON.stringify(req.name)} exists as ${existing.id} of volume ${existing.sourceVolumeId}, not ${req.sourceVolumeId}; use another name`);
        }
        if (existing.state === 'creating') await materialize(existing, await getVolume(existing.sourceVolumeId, 'source_volume_id'));
        return { snapshot: snapshotMessage(existing) };
      }
      const source = await getVolume(req.sourceVolumeId, 'source_volume_id');
      if (source.parameters.passthrough) throw passthroughRefusal(source, 'vhba cannot snapshot a device it does not own; snapshot it with the storage that holds it');
      const id = newId('snap');
      const s: SnapshotRecord = {
        id, name: req.name, sourceVolumeId: source.id, sizeBytes: source.capacityBytes, path: join(snapshotsDir, `${id}.img`),
        createdAtMs: Date.now(), state: 'creating',
      };
      await deps.snapshots.put(s);
      await materialize(s, source);
      return { snapshot: snapshotMessage(s) };
    },

    async deleteSnapshot(req: { snapshotId: string }) {
      if (!req.snapshotId) throw invalidArgument('snapshot_id is required');
      const s = isOurId(req.snapshotId, 'snap') ? await deps.snapshots.get(req.snapshotId) : undefined;
      if (!s) return {};
      await removeIfPresent(s.path);
      await deps.snapshots.delete(s.id);
      return {};
    },

    async listSnapshots(req: { maxEntries: number; startingToken: string; sourceVolumeId: string; snapshotId: string }) {
      let all = (await deps.snapshots.list()).filter((s) => s.state === 'ready');
      if (req.snapshotId) all = all.filter((s) => s.id === req.snapshotId);
      if (req.sourceVolumeId) all = all.filter((s) => s.sourceVolumeId === req.sourceVolumeId);
      const { items, nextToken } = page(all, req.maxEntries, req.startingToken);
      return { entries: items.map((s) => ({ snapshot: snapshotMessage(s) })), nextToken };
    },

    async getSnapshot(req: { snapshotId: string }) {
      if (!req.snapshotId) throw invalidArgument('snapshot_id is required');
      const s = isOurId(req.snapshotId, 'snap') ? await deps.snapshots.get(req.snapshotId) : undefined;
      if (!s || s.state !== 'ready') throw notFound(`snapshot_id ${JSON.stringify(req.snapshotId)}: no such snapshot`);
      return { snapshot: snapshotMessage(s) };
    },
  };
}
