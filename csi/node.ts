// The CSI Node service (CSI spec v1.12 §"Node Service RPC"), a client of the
// engine's control API:
//  - NodeStageVolume checks the volume's image (under --data-dir) and takes
//    its lease: <image>.lease, created exclusively, naming this node.
//  - NodePublishVolume attaches the image as a LUN of the VM's virtio-scsi
//    controller in the engine (placement.ts), with the serial and WWN of the
//    volume context (vhba.io/serial, vhba.io/wwn: in a cluster the
//    VirtualDisk's status.serial/status.wwn, claim-parameters.ts) or, when
//    absent (plain CSI use), derived from the volume id (operator/identity.ts);
//    a pinned address already taken on the controller is the engine's
//    ALREADY_EXISTS. It publishes the VM's socket
//    directory at target_path. Unprivileged, a bind mount is not possible, so
//    target_path becomes a symlink: to the VM's socket directory for a mount
//    volume, to the controller's vhost-user socket for a block volume.
//    (kubelet's bind mount of target_path follows it.)
//  - NodeUnpublishVolume removes that symlink and, with the last target,
//    detaches the LUN (the guest sees it removed).
//  - NodeExpandVolume resizes the LUN: the guest gets CAPACITY DATA HAS CHANGED.
//
// A passthrough volume (volume context vhba.io/host-device or vhba.io/iscsi-*,
// volumes.ts) follows the same steps with no image and no lease: stage checks
// the context (and that a host device exists on this node), publish attaches
// the device with its policy (the engine probes it and refuses a device
// whose WWN or serial is not the expected one, or the same device twice on
// one controller: ALREADY_EXISTS), the last unpublish detaches it. It cannot
// be attached read-only (the device reports its own write protection) or
// expanded (its capacity is the device's).
import { mkdir, open, readlink, realpath, rmdir, stat, symlink, unlink } from 'node:fs/promises';
import { isAbsolute, normalize } from 'node:path';
import type { ServiceImpl } from '../protos/grpc.ts';
import { NodeServiceCapability_RPC_Type as Rpc, VolumeUsage_Unit, type Node } from '../protos/gen/csi/v1/csi_pb.ts';
import { deriveSerial, deriveWwn } from '../operator/identity.ts';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from './errors.ts';
import { checkPath } from './paths.ts';
import { findLunsByBacking, findLunsByDevice, type EngineClient } from './engine-client.ts';
import { lowestFreeTarget, resolvePlacement } from './placement.ts';
import type { RecordStore } from './store.ts';
import { PUBLISH_READONLY_KEY } from './controller.ts';
import {
  ContextKey, TOPOLOGY_NODE_KEY, capabilityProblem, describePassthrough, isReadOnlyMode, parseIdentity, parsePassthrough, sizeForRange, type PassthroughVolume,
  type VolumeIdentity,
} from './volumes.ts';

/** What the node knows about a volume it staged or published. */
export interface NodeVolumeRecord {
  id: string;
  /** The image, checked to be under the data directory; '' for a passthrough volume. */
  backingPath: string;
  /** A passthrough volume's device and policy (from the volume context at stage). */
  passthrough?: PassthroughVolume;
  logicalBlockSize: number;
  physicalBlockSize: number;
  /** An emulated volume's serial and WWN from the volume context at stage;
   * what is missing is derived from the volume id at attach. */
  identity?: VolumeIdentity;
  stagingPath?: string;
  /** target_path → how it was published. */
  targets: Record<string, { readonly: boolean; kind: 'block' | 'mount'; link: string }>;
  attachment?: {
    controllerId: string; socketPath: string; vmDir: string; target: number; lun: number; readonly: boolean;
    /** Passthrough: what the device reported at attach. */
    device?: { serial: string; wwn: string; sizeBytes: number; logicalBlockSize: number };
  };
}

/** What the node service needs. */
export interface NodeDeps {
  nodeId: string;
  maxVolumesPerNode: number;
  /** Staging and target paths must lie below it. */
  publishRoot: string;
  /** Images must lie below it. */
  dataDir: string;
  /** Where VM controller sockets live. */
  socketDir: string;
  engine: EngineClient;
  records: RecordStore<NodeVolumeRecord>;
}

type NodeMethods = (typeof Node)['method'];

/** Runs `fn` after every earlier call has finished (address planning must
 * not interleave between volumes). */
function serializer() {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn);
    tail = run.catch(() => undefined);
    return run;
  };
}

/** Checks a backing path from the volume context: absolute, normalized, an
 * existing regular file whose real path is under the real data directory. */
async function checkBacking(path: string | undefined, dataDir: string, volumeId: string): Promise<string> {
  if (!path) throw notFound(`volume ${volumeId} is unknown to this node: volume_context lacks ${ContextKey.backingFile}; pass the context CreateVolume returned`);
  if (!isAbsolute(path) || normalize(path) !== path || path.split('/').includes('..')) {
    throw invalidArgument(`volume_context ${ContextKey.backingFile} ${JSON.stringify(path)} must be a normalized absolute path`);
  }
  const realData = await realpath(dataDir);
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    throw notFound(`volume ${volumeId}: image ${path} does not exist on node`);
  }
  if (!real.startsWith(`${realData}/`)) throw invalidArgument(`volume_context ${ContextKey.backingFile} ${JSON.stringify(path)} is outside the data directory ${realData}`);
  if (!(await stat(real)).isFile()) throw invalidArgument(`volume_context ${ContextKey.backingFile} ${JSON.stringify(path)} is not a regular file`);
  return real;
}

function blockSizeOf(context: Record<string, string>, key: string, fallback: number): number {
  const v = context[key];
  if (v === undefined) return fallback;
  if (!/^[0-9]{3,5}$/.test(v)) throw invalidArgument(`volume_context ${key} ${JSON.stringify(v)} must be a block size in bytes`);
  return Number(v);
}

/** Takes the image's lease for this node (exclusive create); a lease held by
 * another node is FAILED_PRECONDITION. */
async function takeLease(image: string, nodeId: string, volumeId: string): Promise<void> {
  const lease = `${image}.lease`;
  try {
    const fh = await open(lease, 'wx', 0o600);
    try { await fh.writeFile(`${nodeId}\n`); await fh.sync(); } finally { await fh.close(); }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const holder = (await open(lease, 'r').then(async (fh) => { try { return (await fh.readFile('utf8')).trim(); } finally { await fh.close(); } }));
    if (holder !== nodeId) throw failedPrecondition(`volume ${volumeId} is staged on node ${holder}; unstage it there first`);
  }
}

/** A host device named by a passthrough volume must exist on this node (the
 * engine checks, at attach, that it speaks SCSI and is the expected one). */
async function checkHostDevice(path: string, volumeId: string, nodeId: string): Promise<void> {
  try {
    await realpath(path);
  } catch {
    throw notFound(`volume ${volumeId}: host device ${path} does not exist on node ${nodeId}; schedule the VM where the device is, or fix ${ContextKey.hostDevice}`);
  }
}

/** The Node service over `deps`. */
export function createNode(deps: NodeDeps): ServiceImpl<NodeMethods> {
  const serial = serializer();

  async function detach(r: NodeVolumeRecord): Promise<void> {
    if (!r.attachment) return;
    const a = r.attachment;
    await deps.engine.detachLun({ controllerId: a.controllerId, address: { target: a.target, lun: a.lun } });
    delete r.attachment;
  }

  async function attach(r: NodeVolumeRecord, context: Record<string, string>, readonly: boolean): Promise<NonNullable<NodeVolumeRecord['attachment']>> {
    if (r.attachment) {
      if (r.attachment.readonly !== readonly) throw alreadyExists(`volume ${r.id} is attached with readonly=${r.attachment.readonly}; unpublish every target first`);
      return r.attachment;
    }
    const place = resolvePlacement(context, deps.socketDir);
    if (r.passthrough) {
      if (readonly) throw failedPrecondition(`volume ${r.id} is a passthrough LUN (${describePassthrough(r.passthrough)}) and cannot be attached read-only: the guest's commands go to the device, which reports its own write protection; publish it read-write or write-protect the device`);
      return serial(() => attachPassthrough(r, r.passthrough!, place));
    }
    return serial(async () => {
      await mkdir(place.vmDir, { recursive: true, mode: 0o750 });
      await deps.engine.createController({ id: place.controllerId, socketPath: place.socketPath });
      const { size } = await stat(r.backingPath);
      // After a crash between AttachLun and saving the record, find the LUN again.
      const found = (await findLunsByBacking(deps.engine, r.backingPath)).find((x) => x.controller.id === place.controllerId);
      const target = found?.lun.address?.target ?? place.target ?? lowestFreeTarget(await deps.engine.listControllers({}), place.controllerId);
      const lun = found?.lun.address?.lun ?? place.lun;
      await deps.engine.attachLun({
        controllerId: place.controllerId,
        address: { target, lun },
        backing: { case: 'file', value: { path: r.backingPath } },
        parameters: {
          sizeBytes: BigInt(size), logicalBlockSize: r.logicalBlockSize, physicalBlockSize: r.physicalBlockSize,
          serial: r.identity?.serial ?? deriveSerial(r.id), wwn: r.identity?.wwn ?? deriveWwn(r.id), readOnly: readonly, product: 'vhba csi disk',
        },
      });
      r.attachment = { controllerId: place.controllerId, socketPath: place.socketPath, vmDir: place.vmDir, target, lun, readonly };
      await deps.records.put(r);
      return r.attachment;
    });
  }

  async function attachPassthrough(r: NodeVolumeRecord, p: PassthroughVolume, place: ReturnType<typeof resolvePlacement>): Promise<NonNullable<NodeVolumeRecord['attachment']>> {
    await mkdir(place.vmDir, { recursive: true, mode: 0o750 });
    await deps.engine.createController({ id: place.controllerId, socketPath: place.socketPath });
    // After a crash between AttachLun and saving the record, find the LUN
    // again; but not one another volume of the same device holds (that one
    // is not ours to share: the engine refuses the device twice on a controller).
    const held = new Set((await deps.records.list()).filter((o) => o.id !== r.id && o.attachment?.controllerId === place.controllerId).map((o) => `${o.attachment!.target}:${o.attachment!.lun}`));
    const found = (await findLunsByDevice(deps.engine, p)).find((x) => x.controller.id === place.controllerId && !held.has(`${x.lun.address?.target}:${x.lun.address?.lun}`));
    const target = found?.lun.address?.target ?? place.target ?? lowestFreeTarget(await deps.engine.listControllers({}), place.controllerId);
    const lun = found?.lun.address?.lun ?? place.lun;
    const s = p.source;
    const { device } = await deps.engine.attachLun({
      controllerId: place.controllerId,
      address: { target, lun },
      backing: s.kind === 'hostDevice'
        ? { case: 'hostDevice', value: { path: s.path } }
        : { case: 'iscsi', value: { portal: s.portal, iqn: s.iqn, lun: s.lun, initiatorName: s.initiatorName ?? '' } },
      passthrough: { rawio: p.rawio, expectedWwn: p.expectedWwn ?? '', expectedSerial: p.expectedSerial ?? '' },
    });
    r.attachment = {
      controllerId: place.controllerId, socketPath: place.socketPath, vmDir: place.vmDir, target, lun, readonly: false,
      ...(device ? { device: { serial: device.serial, wwn: device.wwn, sizeBytes: Number(device.sizeBytes), logicalBlockSize: device.logicalBlockSize } } : {}),
    };
    await deps.records.put(r);
    return r.attachment;
  }

  async function knownPath(r: NodeVolumeRecord | undefined, path: string, volumeId: string): Promise<NodeVolumeRecord> {
    if (!r) throw notFound(`volume ${volumeId} is not staged or published on node ${deps.nodeId}`);
    const p = normalize(path);
    if (!r.targets[p] && r.stagingPath !== p) throw notFound(`volume ${volumeId} is not published at ${path}`);
    return r;
  }

  /** Stats of a passthrough volume: the device's capacity as the engine
   * probed it (no "used": the guest's data is on the device), and whether
   * the engine still holds the device where this node attached it. */
  async function passthroughStats(r: NodeVolumeRecord, p: PassthroughVolume) {
    const what = describePassthrough(p);
    const a = r.attachment;
    if (!a) return { usage: [], volumeCondition: { abnormal: false, message: `${what}: staged, not attached (no target published)` } };
    const luns = await findLunsByDevice(deps.engine, p).catch(() => undefined);
    if (!luns) return { usage: [], volumeCondition: { abnormal: true, message: 'the engine cannot be reached' } };
    const here = luns.find((x) => x.controller.id === a.controllerId && x.lun.address?.target === a.target && x.lun.address?.lun === a.lun);
    if (!here) return { usage: [], volumeCondition: { abnormal: true, message: `${what} is not attached in the engine (expected on ${a.controllerId} target ${a.target} lun ${a.lun})` } };
    const d = here.lun.device;
    const total = d?.sizeBytes ?? BigInt(a.device?.sizeBytes ?? 0);
    const identity = d ? `: ${d.vendor.trim()} ${d.product.trim()}${d.wwn ? ` wwn 0x${d.wwn}` : ''}${d.serial ? ` serial ${d.serial}` : ''}` : '';
    return {
      usage: total > 0n ? [{ unit: VolumeUsage_Unit.BYTES, total }] : [],
      volumeCondition: { abnormal: false, message: `${what} attached to ${a.controllerId} target ${a.target} lun ${a.lun}${identity}` },
    };
  }

  return {
    async nodeStageVolume(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      if (!req.stagingTargetPath) throw invalidArgument('staging_target_path is required');
      if (!req.volumeCapability) throw invalidArgument('volume_capability is required');
      const problem = capabilityProblem(req.volumeCapability);
      if (problem) throw invalidArgument(`volume_capability: ${problem}`);
      const staging = await checkPath(req.stagingTargetPath, 'staging_target_path', deps.publishRoot);
      if (staging.kind !== 'directory' && staging.kind !== 'absent') throw invalidArgument(`staging_target_path ${staging.path} exists and is not a directory`);
      const existing = await deps.records.get(req.volumeId);
      if (existing?.stagingPath) {
        if (existing.stagingPath !== staging.path) throw alreadyExists(`volume ${req.volumeId} is already staged at ${existing.stagingPath}`);
        return {};
      }
      const passthrough = existing ? existing.passthrough : parsePassthrough(req.volumeContext, 'volume_context');
      const identity = existing ? existing.identity : parseIdentity(req.volumeContext, 'volume_context');
      if (passthrough?.source.kind === 'hostDevice') await checkHostDevice(passthrough.source.path, req.volumeId, deps.nodeId);
      const backingPath = passthrough ? '' : existing?.backingPath ?? (await checkBacking(req.volumeContext[ContextKey.backingFile], deps.dataDir, req.volumeId));
      if (staging.kind === 'absent') await mkdir(staging.path, { mode: 0o750 });
      // A passthrough device has no image to lease: ControllerPublish keeps
      // it on one node, and the engine refuses it twice on one controller.
      if (!passthrough) await takeLease(backingPath, deps.nodeId, req.volumeId);
      const r: NodeVolumeRecord = existing ?? {
        id: req.volumeId, backingPath, targets: {}, ...(passthrough ? { passthrough } : {}), ...(identity && !passthrough ? { identity } : {}),
        logicalBlockSize: blockSizeOf(req.volumeContext, ContextKey.logicalBlockSize, 512),
        physicalBlockSize: blockSizeOf(req.volumeContext, ContextKey.physicalBlockSize, 4096),
      };
      r.stagingPath = staging.path;
      await deps.records.put(r);
      return {};
    },

    async nodeUnstageVolume(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      if (!req.stagingTargetPath) throw invalidArgument('staging_target_path is required');
      const r = await deps.records.get(req.volumeId);
      if (!r?.stagingPath) return {};
      const targets = Object.keys(r.targets);
      if (targets.length > 0) throw failedPrecondition(`volume ${r.id} is still published at ${targets.join(', ')}; NodeUnpublishVolume first`);
      if (!r.passthrough) await unlink(`${r.backingPath}.lease`).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
      delete r.stagingPath;
      await deps.records.delete(r.id);
      return {};
    },

    async nodePublishVolume(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      if (!req.targetPath) throw invalidArgument('target_path is required');
      if (!req.volumeCapability) throw invalidArgument('volume_capability is required');
      const problem = capabilityProblem(req.volumeCapability);
      if (problem) throw invalidArgument(`volume_capability: ${problem}`);
      const target = await checkPath(req.targetPath, 'target_path', deps.publishRoot);
      if (!req.stagingTargetPath) throw invalidArgument('staging_target_path is required: this plugin stages volumes (STAGE_UNSTAGE_VOLUME)');
      const r = await deps.records.get(req.volumeId);
      if (!r?.stagingPath) throw failedPrecondition(`volume ${req.volumeId} is not staged on this node; call NodeStageVolume first`);
      if (r.stagingPath !== normalize(req.stagingTargetPath)) throw invalidArgument(`staging_target_path ${req.stagingTargetPath} differs from ${r.stagingPath} where the volume is staged`);
      const readonly = req.readonly || req.publishContext[PUBLISH_READONLY_KEY] === 'true' || isReadOnlyMode(req.volumeCapability);
      const kind = req.volumeCapability.accessType.case === 'block' ? 'block' : 'mount';
      const existing = r.targets[target.path];
      if (existing) {
        if (existing.readonly !== readonly || existing.kind !== kind) throw alreadyExists(`volume ${r.id} is published at ${target.path} with readonly=${existing.readonly}, ${existing.kind}; unpublish it first`);
      }
      const a = await attach(r, { ...req.volumeContext }, readonly);
      const link = kind === 'block' ? a.socketPath : a.vmDir;
      if (target.kind === 'symlink') {
        if ((await readlink(target.path)) !== link) throw alreadyExists(`target_path ${target.path} is a symlink this plugin did not make for volume ${r.id}`);
      } else if (target.kind === 'directory') {
        await rmdir(target.path).catch(() => { throw alreadyExists(`target_path ${target.path} is a non-empty directory; remove it or pick another path`); });
        await symlink(link, target.path);
      } else if (target.kind === 'absent') {
        await symlink(link, target.path);
      } else {
        throw alreadyExists(`target_path ${target.path} exists and is not ours; remove it or pick another path`);
      }
      r.targets[target.path] = { readonly, kind, link };
      await deps.records.put(r);
      return {};
    },

    async nodeUnpublishVolume(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      if (!req.targetPath) throw invalidArgument('target_path is required');
      const target = await checkPath(req.targetPath, 'target_path', deps.publishRoot);
      const r = await deps.records.get(req.volumeId);
      const published = r?.targets[target.path];
      if (!r || !published) return {}; // not published there: nothing to undo
      if (target.kind === 'symlink' && (await readlink(target.path)) === published.link) await unlink(target.path);
      delete r.targets[target.path];
      if (Object.keys(r.targets).length === 0) await detach(r);
      await deps.records.put(r);
      return {};
    },

    async nodeGetVolumeStats(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      if (!req.volumePath) throw invalidArgument('volume_path is required');
      const r = await knownPath(await deps.records.get(req.volumeId), req.volumePath, req.volumeId);
      if (r.passthrough) return passthroughStats(r, r.passthrough);
      let abnormal = false;
      let message = 'image present';
      let total = 0;
      let used = 0;
      try {
        const st = await stat(r.backingPath);
        total = st.size;
        used = Math.min(st.size, st.blocks * 512);
      } catch (err) {
        abnormal = true;
        message = `image ${r.backingPath} is not accessible: ${(err as Error).message}`;
      }
      if (!abnormal && r.attachment) {
        const luns = await findLunsByBacking(deps.engine, r.backingPath).catch(() => undefined);
        if (!luns) { abnormal = true; message = 'the engine cannot be reached'; }
        else if (luns.length === 0) { abnormal = true; message = `the LUN is not attached in the engine (expected on ${r.attachment.controllerId})`; }
        else message = `attached to ${r.attachment.controllerId} target ${r.attachment.target} lun ${r.attachment.lun}`;
      }
      return {
        usage: [{ unit: 1, total: BigInt(total), used: BigInt(used), available: BigInt(total - used) }],
        volumeCondition: { abnormal, message },
      };
    },

    async nodeExpandVolume(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      if (!req.volumePath) throw invalidArgument('volume_path is required');
      if (req.volumeCapability) {
        const problem = capabilityProblem(req.volumeCapability);
        if (problem) throw invalidArgument(`volume_capability: ${problem}`);
      }
      const r = await knownPath(await deps.records.get(req.volumeId), req.volumePath, req.volumeId);
      if (r.passthrough) throw failedPrecondition(`volume ${r.id} is a passthrough LUN (${describePassthrough(r.passthrough)}): its capacity is the device's; grow the device itself and the guest gets the device's own CAPACITY DATA HAS CHANGED`);
      const { size: current } = await stat(r.backingPath);
      const wanted = req.capacityRange ? sizeForRange(req.capacityRange, r.physicalBlockSize, current) : current;
      if (wanted > current) throw failedPrecondition(`volume ${r.id} image is ${current} bytes, less than ${wanted}; call ControllerExpandVolume first`);
      if (r.attachment) {
        await deps.engine.resizeLun({ controllerId: r.attachment.controllerId, address: { target: r.attachment.target, lun: r.attachment.lun }, sizeBytes: BigInt(current) });
      }
      return { capacityBytes: BigInt(current) };
    },

    async nodeGetCapabilities() {
      const rpcs = [Rpc.STAGE_UNSTAGE_VOLUME, Rpc.GET_VOLUME_STATS, Rpc.EXPAND_VOLUME, Rpc.VOLUME_CONDITION];
      return { capabilities: rpcs.map((type) => ({ type: { case: 'rpc' as const, value: { type } } })) };
    },

    async nodeGetInfo() {
      return {
        nodeId: deps.nodeId,
        maxVolumesPerNode: BigInt(deps.maxVolumesPerNode),
        accessibleTopology: { segments: { [TOPOLOGY_NODE_KEY]: deps.nodeId } },
      };
    },
  };
}

