// The CSI Controller service (CSI spec v1.12 §"Controller Service RPC"):
// volumes are sparse image files under <data-dir>/volumes, recorded in a
// RecordStore so the controller's state survives a restart. Snapshots and
// clones are in controller-snapshots.ts.
//
// Passthrough volumes (deviceType lun, issue 8: the vhba.io/host-device or
// vhba.io/iscsi-* parameters, volumes.ts) are a whole real SCSI LUN: no image
// is created or deleted; the record carries the device and the policy, and
// the volume context hands them to the node, which attaches the device.
// Their capacity is the device's: snapshots, clones and expansion are
// FAILED_PRECONDITION.
import { mkdir, open, stat, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServiceImpl } from '../protos/grpc.ts';
import {
  ControllerServiceCapability_RPC_Type as Rpc,
  type Controller,
  type TopologyRequirement,
} from '../protos/gen/csi/v1/csi_pb.ts';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { VolumeSchema } from '../protos/gen/csi/v1/csi_pb.ts';
import { alreadyExists, failedPrecondition, invalidArgument, notFound, resourceExhausted, unimplemented, aborted } from './errors.ts';
import type { RecordStore } from './store.ts';
import {
  ContextKey, DRIVER_NAME, TOPOLOGY_NODE_KEY, MAX_CAPACITY_BYTES, capabilityProblem, checkCapabilities, describePassthrough, isOurId, isReadOnlyMode, newId,
  identityContext, parseParameters, passthroughContext, sizeForRange, type SnapshotRecord, type VolumeRecord,
} from './volumes.ts';
import { snapshotMethods, createVolumeImage } from './controller-snapshots.ts';
import type { EngineClient } from './engine-client.ts';
import { claimParameters, type ClaimReader } from './claim-parameters.ts';

/** Publish-context key telling the node to attach the LUN read-only. */
export const PUBLISH_READONLY_KEY = 'scsi.vhba.io/readonly';

/** What the controller needs. */
export interface ControllerDeps {
  /** The node whose data directory this controller provisions into. */
  nodeId: string;
  dataDir: string;
  volumes: RecordStore<VolumeRecord>;
  snapshots: RecordStore<SnapshotRecord>;
  /** Node ids the controller may publish to (NOT_FOUND otherwise). */
  knownNodes(): Promise<ReadonlySet<string>>;
  maxVolumesPerNode: number;
  /** The engine, for flushing attached LUNs before a snapshot. */
  engine?: EngineClient;
  /** In a cluster: reads the claim behind a CreateVolume for its
   * VirtualDisk's placement, identity and block sizes, or a lun disk's device
   * (claim-parameters.ts). Absent: parameters only. */
  claims?: ClaimReader;
}

type ControllerMethods = (typeof Controller)['method'];

/** Paging token: base64url of "v1:<id to start at>"; anything else → ABORTED. */
export function encodeToken(id: string): string {
  return Buffer.from(`v1:${id}`).toString('base64url');
}
/** Decodes a paging token (CSI: an invalid starting_token → ABORTED). */
export function decodeToken(token: string): string {
  const text = /^[A-Za-z0-9_-]{1,200}$/.test(token) ? Buffer.from(token, 'base64url').toString() : '';
  if (!text.startsWith('v1:') || text.length < 4) throw aborted(`starting_token ${JSON.stringify(token)} is not a token this plugin issued; list again from the start`);
  return text.slice(3);
}

/** One page of sorted records. */
export function page<T extends { id: string }>(all: T[], maxEntries: number, startingToken: string): { items: T[]; nextToken: string } {
  if (maxEntries < 0) throw invalidArgument('max_entries must not be negative');
  const from = startingToken ? decodeToken(startingToken) : '';
  const rest = all.filter((r) => r.id >= from);
  const items = maxEntries > 0 ? rest.slice(0, maxEntries) : rest;
  const next = maxEntries > 0 && rest.length > maxEntries ? encodeToken(rest[maxEntries]!.id) : '';
  return { items, nextToken: next };
}

/** The CSI Volume message for a record. */
export function volumeMessage(v: VolumeRecord): MessageInitShape<typeof VolumeSchema> {
  const passthrough = v.parameters.passthrough;
  return {
    volumeId: v.id,
    capacityBytes: BigInt(v.capacityBytes),
    volumeContext: passthrough
      ? { ...v.parameters.placement, ...passthroughContext(passthrough), [ContextKey.ioProfile]: v.parameters.ioProfile }
      : {
        ...v.parameters.placement,
        ...identityContext(v.parameters.identity),
        [ContextKey.backingFile]: v.path,
        [ContextKey.logicalBlockSize]: String(v.parameters.logicalBlockSize),
        [ContextKey.physicalBlockSize]: String(v.parameters.physicalBlockSize),
        [ContextKey.ioProfile]: v.parameters.ioProfile,
      },
    ...(v.contentSource
      ? { contentSource: { type: v.contentSource.kind === 'snapshot' ? { case: 'snapshot', value: { snapshotId: v.contentSource.id } } : { case: 'volume', value: { volumeId: v.contentSource.id } } } }
      : {}),
    accessibleTopology: [{ segments: { [TOPOLOGY_NODE_KEY]: v.node } }],
  } as MessageInitShape<typeof VolumeSchema>;
}

/** Health of a volume's image: present with the recorded size. */
async function volumeCondition(v: VolumeRecord): Promise<{ abnormal: boolean; message: string }> {
  if (v.parameters.passthrough) {
    return { abnormal: false, message: `passthrough ${describePassthrough(v.parameters.passthrough)}; the node checks the device when it attaches it (NodeGetVolumeStats)` };
  }
  if (v.state !== 'ready') return { abnormal: true, message: 'creation did not finish; repeat CreateVolume with the same name' };
  try {
    const st = await stat(v.path);
    if (st.size < v.capacityBytes) return { abnormal: true, message: `image ${v.path} is ${st.size} bytes, smaller than the recorded ${v.capacityBytes}` };
    return { abnormal: false, message: 'image present' };
  } catch (err) {
    return { abnormal: true, message: `image ${v.path} is not accessible: ${(err as Error).message}` };
  }
}

function topologyAllows(req: TopologyRequirement | undefined, nodeId: string): boolean {
  if (!req || req.requisite.length === 0) return true;
  return req.requisite.some((t) => t.segments[TOPOLOGY_NODE_KEY] === nodeId);
}

function sameParameters(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).filter((k) => !k.startsWith('csi.storage.k8s.io/')).sort();
  const kb = Object.keys(b).filter((k) => !k.startsWith('csi.storage.k8s.io/')).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

/** FAILED_PRECONDITION for what a passthrough volume cannot do (its data and size are the device's). */
export function passthroughRefusal(v: VolumeRecord, what: string): Error {
  return failedPrecondition(`volume ${v.id} is a passthrough LUN (${describePassthrough(v.parameters.passthrough!)}): ${what}`);
}

/** The Controller service over `deps`. */
export function createController(deps: ControllerDeps): ServiceImpl<ControllerMethods> {
  const volumesDir = join(deps.dataDir, 'volumes');

  async function getVolume(id: string, field = 'volume_id'): Promise<VolumeRecord> {
    const v = isOurId(id, 'vol') ? await deps.volumes.get(id) : undefined;
    if (!v) throw notFound(`${field} ${JSON.stringify(id)}: no such volume`);
    return v;
  }

  const snapshots = snapshotMethods(deps, getVolume);

  return {
    async createVolume(req) {
      if (!req.name) throw invalidArgument('name is required');
      if (req.name.length > 128) throw invalidArgument('name is longer than 128 characters');
      checkCapabilities(req.volumeCapabilities);
      // In a cluster, a VirtualDisk's claim says where the volume goes and
      // what it is (claim-parameters.ts): the VM, address, identity and block
      // sizes of an emulated disk, a lun disk's device (unless a StorageClass
      // parameter names one). Its values win over the StorageClass's.
      const given = deps.claims ? { ...req.parameters, ...(await claimParameters(req.parameters, deps.claims)) } : req.parameters;
      const parameters = parseParameters(given);
      if (Object.keys(req.mutableParameters).length > 0) throw invalidArgument('mutable_parameters are not supported (no ControllerModifyVolume)');
      // A passthrough volume's size is the device's, unknown until the node
      // opens it: capacity_bytes 0 means "unknown" (CSI spec, Volume), and
      // external-provisioner then writes the claim's request (the operator's
      // small placeholder) into the PersistentVolume; a non-zero value below
      // the request would fail provisioning. The range is not checked.
      const capacity = parameters.passthrough ? 0 : sizeForRange(req.capacityRange, parameters.physicalBlockSize);
      if (!topologyAllows(req.accessibilityRequirements, deps.nodeId)) {
        throw resourceExhausted(`this controller provisions only on node ${deps.nodeId} (${TOPOLOGY_NODE_KEY}); none of the requisite topologies include it`);
      }
      const src = req.volumeContentSource?.type;
      const contentSource = src?.case === 'snapshot' ? { kind: 'snapshot' as const, id: src.value.snapshotId }
        : src?.case === 'volume' ? { kind: 'volume' as const, id: src.value.volumeId } : undefined;

      const existing = (await deps.volumes.list()).find((v) => v.name === req.name);
      if (existing) {
        const required = Number(req.capacityRange?.requiredBytes ?? 0n);
        const limit = Number(req.capacityRange?.limitBytes ?? 0n);
        const problems: string[] = [];
        if (existing.parameters.passthrough) {
          // Capacity unknown (0): the range is not compared (see above).
        } else if (existing.capacityBytes < required || (limit > 0 && existing.capacityBytes > limit)) problems.push(`capacity ${existing.capacityBytes} is outside the requested range`);
        if (!sameParameters(existing.rawParameters, given)) problems.push('parameters differ');
        if (existing.contentSource?.kind !== contentSource?.kind || existing.contentSource?.id !== contentSource?.id) problems.push('content source differs');
        if (problems.length > 0) throw alreadyExists(`volume ${JSON.stringify(req.name)} exists as ${existing.id} but ${problems.join(', ')}; delete it or use another name`);
        if (existing.state === 'creating') {
          await createVolumeImage(deps, existing);
          existing.state = 'ready';
          await deps.volumes.put(existing);
        }
        return { volume: volumeMessage(existing) };
      }

      if (parameters.passthrough) {
        if (contentSource) throw invalidArgument(`a passthrough volume (${describePassthrough(parameters.passthrough)}) is the device itself and cannot be created from a ${contentSource.kind}; drop volume_content_source`);
        // Nothing to create: the record is the volume.
        const record: VolumeRecord = {
          id: newId('vol'), name: req.name, capacityBytes: 0, path: '', parameters, rawParameters: { ...given },
          node: deps.nodeId, state: 'ready', published: {},
        };
        await deps.volumes.put(record);
        return { volume: volumeMessage(record) };
      }
      let size = capacity;
      if (contentSource?.kind === 'snapshot') {
        const snap = isOurId(contentSource.id, 'snap') ? await deps.snapshots.get(contentSource.id) : undefined;
        if (!snap || snap.state !== 'ready') throw notFound(`volume_content_source.snapshot.snapshot_id ${JSON.stringify(contentSource.id)}: no such snapshot`);
        if (snap.sizeBytes > size) {
          if (req.capacityRange?.requiredBytes) throw invalidArgument(`snapshot ${snap.id} holds ${snap.sizeBytes} bytes, more than the requested ${size}; request at least ${snap.sizeBytes}`);
          size = snap.sizeBytes;
        }
      } else if (contentSource?.kind === 'volume') {
        const source = await getVolume(contentSource.id, 'volume_content_source.volume.volume_id');
        if (source.parameters.passthrough) throw passthroughRefusal(source, 'it cannot be cloned (vhba does not copy a device); clone it with the storage that holds it');
        if (source.capacityBytes > size) {
          if (req.capacityRange?.requiredBytes) throw invalidArgument(`source volume ${source.id} holds ${source.capacityBytes} bytes, more than the requested ${size}; request at least ${source.capacityBytes}`);
          size = source.capacityBytes;
        }
      }
      await mkdir(volumesDir, { recursive: true, mode: 0o700 });
      const id = newId('vol');
      const record: VolumeRecord = {
        id, name: req.name, capacityBytes: size, path: join(volumesDir, `${id}.img`), parameters, rawParameters: { ...given },
        ...(contentSource ? { contentSource } : {}), node: deps.nodeId, state: 'creating', published: {},
      };
      // Record first: a crash after this point is repaired by the retry, never leaks an image.
      await deps.volumes.put(record);
      await createVolumeImage(deps, record);
      record.state = 'ready';
      await deps.volumes.put(record);
      return { volume: volumeMessage(record) };
    },

    async deleteVolume(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      const v = isOurId(req.volumeId, 'vol') ? await deps.volumes.get(req.volumeId) : undefined;
      if (!v) return {};
      const nodes = Object.keys(v.published);
      if (nodes.length > 0) throw failedPrecondition(`volume ${v.id} is still published to ${nodes.join(', ')}; ControllerUnpublishVolume it first`);
      // A passthrough volume's data is the device's: only the record goes.
      if (!v.parameters.passthrough) for (const p of [v.path, `${v.path}.lease`]) await unlink(p).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
      await deps.volumes.delete(v.id);
      return {};
    },

    async controllerPublishVolume(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      if (!req.nodeId) throw invalidArgument('node_id is required');
      const problem = capabilityProblem(req.volumeCapability);
      if (problem) throw invalidArgument(`volume_capability: ${problem}`);
      const v = await getVolume(req.volumeId);
      if (!(await deps.knownNodes()).has(req.nodeId)) throw notFound(`node_id ${JSON.stringify(req.nodeId)}: no such node runs the ${DRIVER_NAME} node plugin`);
      if (v.node !== req.nodeId) throw failedPrecondition(`volume ${v.id} lives on node ${v.node} and cannot be published to ${req.nodeId}`);
      const current = v.published[req.nodeId];
      if (current) {
        if (current.readonly !== req.readonly) throw alreadyExists(`volume ${v.id} is already published to ${req.nodeId} with readonly=${current.readonly}; unpublish it first`);
      } else {
        const others = Object.keys(v.published);
        if (others.length > 0) throw failedPrecondition(`volume ${v.id} is published to ${others.join(', ')}; a vhba disk is attached to one node at a time`);
        if (deps.maxVolumesPerNode > 0) {
          const count = (await deps.volumes.list()).filter((o) => o.published[req.nodeId]).length;
          if (count >= deps.maxVolumesPerNode) throw resourceExhausted(`node ${req.nodeId} already has ${count} volumes published, its limit`);
        }
        v.published[req.nodeId] = { readonly: req.readonly };
        await deps.volumes.put(v);
      }
      return { publishContext: { [PUBLISH_READONLY_KEY]: String(req.readonly) } };
    },

    async controllerUnpublishVolume(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      const v = isOurId(req.volumeId, 'vol') ? await deps.volumes.get(req.volumeId) : undefined;
      if (!v) return {}; // unknown volume: safely regarded as unpublished (CSI spec)
      const nodes = req.nodeId ? [req.nodeId] : Object.keys(v.published);
      let changed = false;
      for (const n of nodes) if (v.published[n]) { delete v.published[n]; changed = true; }
      if (changed) await deps.volumes.put(v);
      return {};
    },

    async validateVolumeCapabilities(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      if (req.volumeCapabilities.length === 0) throw invalidArgument('volume_capabilities is required');
      const v = await getVolume(req.volumeId);
      for (const cap of req.volumeCapabilities) {
        const problem = capabilityProblem(cap);
        if (problem) return { message: problem };
        if (v.parameters.passthrough && isReadOnlyMode(cap)) return { message: `volume ${v.id} is a passthrough LUN: it cannot be attached read-only (the device reports its own write protection)` };
      }
      if (Object.keys(req.parameters).length > 0) {
        try { parseParameters(req.parameters); } catch (err) { return { message: (err as Error).message }; }
        if (!sameParameters(v.rawParameters, req.parameters)) return { message: `parameters differ from those volume ${v.id} was created with` };
      }
      return { confirmed: { volumeContext: req.volumeContext, volumeCapabilities: req.volumeCapabilities, parameters: req.parameters } };
    },

    async listVolumes(req) {
      const { items, nextToken } = page(await deps.volumes.list(), req.maxEntries, req.startingToken);
      const entries = [];
      for (const v of items) {
        entries.push({ volume: volumeMessage(v), status: { publishedNodeIds: Object.keys(v.published), volumeCondition: await volumeCondition(v) } });
      }
      return { entries, nextToken };
    },

    async getCapacity(req) {
      if (req.volumeCapabilities.length > 0) checkCapabilities(req.volumeCapabilities);
      parseParameters(req.parameters);
      const segment = req.accessibleTopology?.segments[TOPOLOGY_NODE_KEY];
      if (req.accessibleTopology && segment !== deps.nodeId) return { availableCapacity: 0n };
      await mkdir(deps.dataDir, { recursive: true, mode: 0o700 });
      const fs = await statfs(deps.dataDir);
      return { availableCapacity: BigInt(fs.bavail) * BigInt(fs.bsize), maximumVolumeSize: BigInt(MAX_CAPACITY_BYTES), minimumVolumeSize: 4096n };
    },

    async controllerGetCapabilities() {
      const rpcs = [
        Rpc.CREATE_DELETE_VOLUME, Rpc.PUBLISH_UNPUBLISH_VOLUME, Rpc.LIST_VOLUMES, Rpc.GET_CAPACITY, Rpc.CREATE_DELETE_SNAPSHOT,
        Rpc.LIST_SNAPSHOTS, Rpc.CLONE_VOLUME, Rpc.PUBLISH_READONLY, Rpc.EXPAND_VOLUME, Rpc.LIST_VOLUMES_PUBLISHED_NODES,
        Rpc.VOLUME_CONDITION, Rpc.GET_VOLUME,
        // GET_SNAPSHOT (alpha) is not claimed although GetSnapshot works:
        // csi-sanity v5.4.0 fails on capabilities it does not know.
      ];
      return { capabilities: rpcs.map((type) => ({ type: { case: 'rpc' as const, value: { type } } })) };
    },

    ...snapshots,

    async controllerExpandVolume(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      if (!req.capacityRange) throw invalidArgument('capacity_range is required');
      if (req.volumeCapability) {
        const problem = capabilityProblem(req.volumeCapability);
        if (problem) throw invalidArgument(`volume_capability: ${problem}`);
      }
      const v = await getVolume(req.volumeId);
      if (v.parameters.passthrough) throw passthroughRefusal(v, 'its capacity is the device\'s; grow the device itself and the guest gets the device\'s own CAPACITY DATA HAS CHANGED');
      const size = sizeForRange(req.capacityRange, v.parameters.physicalBlockSize, v.capacityBytes);
      if (size > v.capacityBytes) {
        const fh = await open(v.path, 'r+');
        try {
          await fh.truncate(size); // grows with a hole: stays sparse
          await fh.sync();
        } finally {
          await fh.close();
        }
        v.capacityBytes = size;
        await deps.volumes.put(v);
      }
      // The engine learns the new size in NodeExpandVolume (ResizeLun), which
      // makes the guest see CAPACITY DATA HAS CHANGED.
      return { capacityBytes: BigInt(v.capacityBytes), nodeExpansionRequired: true };
    },

    async controllerGetVolume(req) {
      if (!req.volumeId) throw invalidArgument('volume_id is required');
      const v = await getVolume(req.volumeId);
      return { volume: volumeMessage(v), status: { publishedNodeIds: Object.keys(v.published), volumeCondition: await volumeCondition(v) } };
    },

    async controllerModifyVolume() {
      throw unimplemented('ControllerModifyVolume is not supported: vhba volumes have no mutable parameters');
    },
  };
}
