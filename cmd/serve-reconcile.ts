// The reconcile step of `vhba serve`: what its manifest directory asks for
// (desired) against what the engine reports (observed, ListControllers),
// as a PURE plan of control-API actions, and an executor that runs them
// through the gRPC client. Every action is idempotent on the engine's side
// (attach of the same LUN → OK, detach of an absent one → OK), so a plan may
// be re-run after a partial failure; re-planning the world it produced yields
// no actions.
//
// Rules, per controller serve manages (its socket lies in serve's socket dir):
//  - a desired controller the engine lacks is created;
//  - an observed LUN nobody desires is detached (hot-unplug);
//  - a desired LUN the engine lacks is attached (hotplug);
//  - same address, same identity and geometry, larger capacity: resized (grow);
//  - smaller capacity: refused (a notice; shrinking would cut off guest data);
//  - same address, other backing/serial/WWN/block size/read-only: replaced
//    (detach, then attach), with a notice;
//  - passthrough LUNs (hostDevice, iscsi; issue 8) are compared by device and
//    policy (rawio, timeout, expected WWN and serial): any change replaces
//    them; they are never resized (their capacity is the device's own);
//  - a controller whose queue count changed keeps running as it is (a running
//    VM's PCI device cannot change), with a notice; controllers nobody desires
//    any more are kept (the VM may still be connected) and only lose their LUNs.
// Order: creates, detaches, attaches, resizes — an address freed by a
// removed disk is free before a new disk takes it.
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { isPassthrough, type Backing, type DeviceIdentity, type LunSpec, type PassthroughPolicy } from '../hba/engine-api.ts';
import type {
  AttachLunRequestSchema, DeviceIdentity as DeviceIdentityMessage, ListControllersResponse, LunStatus, PassthroughPolicy as PassthroughPolicyMessage,
} from '../protos/gen/vhba/hba/v1/hba_pb.ts';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { EngineClient } from './engine-client.ts';

/** A controller serve wants. */
export interface DesiredController {
  id: string;
  socketPath: string;
  numRequestQueues: number;
}

/** A LUN serve wants, with the disk it serves. */
export interface DesiredLun {
  controllerId: string;
  /** The VirtualDisk key (namespace/name), for messages. */
  key: string;
  spec: LunSpec;
}

/** What the manifests ask for. */
export interface DesiredState {
  controllers: DesiredController[];
  luns: DesiredLun[];
}

/** One observed LUN: its spec and, for a passthrough LUN, the device's identity. */
export type ObservedLun = LunSpec & { device?: DeviceIdentity };

/** One observed controller. */
export interface ObservedController {
  id: string;
  socketPath: string;
  numRequestQueues: number;
  luns: ObservedLun[];
}

/** One step of a plan. */
export type ReconcileAction =
  | { kind: 'createController'; controller: DesiredController }
  | { kind: 'detachLun'; controllerId: string; target: number; lun: number; reason: string }
  | { kind: 'attachLun'; controllerId: string; key: string; spec: LunSpec }
  | { kind: 'resizeLun'; controllerId: string; key: string; target: number; lun: number; fromBytes: number; toBytes: number };

/** A plan and what it refuses to do. */
export interface ReconcilePlan {
  actions: ReconcileAction[];
  /** Changes left undone, each a sentence naming the disk and what to do. */
  notices: string[];
}

/** A PassthroughPolicy message as the engine's policy (empty fields absent, as the control API does). */
export function policyFromMessage(m: PassthroughPolicyMessage | undefined): PassthroughPolicy {
  const policy: PassthroughPolicy = { rawio: m?.rawio ?? false };
  if (m?.timeoutMs) policy.timeoutMs = m.timeoutMs;
  if (m?.expectedWwn) policy.expectedWwn = m.expectedWwn.toLowerCase();
  if (m?.expectedSerial) policy.expectedSerial = m.expectedSerial;
  return policy;
}

/** A DeviceIdentity message as plain data. */
export function deviceFromMessage(d: DeviceIdentityMessage): DeviceIdentity {
  return {
    peripheralDeviceType: d.peripheralDeviceType, vendor: d.vendor, product: d.product, revision: d.revision,
    serial: d.serial, wwn: d.wwn.toLowerCase(), logicalBlockSize: d.logicalBlockSize, physicalBlockSize: d.physicalBlockSize, sizeBytes: Number(d.sizeBytes),
  };
}

/** One LunStatus as plain observed state (memory backings have no path;
 * passthrough LUNs carry host_device or iscsi, their policy and device). */
export function observedLun(l: LunStatus): ObservedLun {
  const target = l.address?.target ?? 0;
  const lun = l.address?.lun ?? 0;
  if (l.hostDevice !== undefined || l.iscsi !== undefined) {
    const policy = policyFromMessage(l.passthrough);
    const backing: Backing = l.hostDevice !== undefined
      ? { kind: 'hostDevice', path: l.hostDevice.path, policy }
      : { kind: 'iscsi', portal: l.iscsi!.portal, iqn: l.iscsi!.iqn, lun: l.iscsi!.lun, ...(l.iscsi!.initiatorName ? { initiatorName: l.iscsi!.initiatorName } : {}), policy };
    return { target, lun, backing, ...(l.device === undefined ? {} : { device: deviceFromMessage(l.device) }) };
  }
  const p = l.parameters;
  const sizeBytes = Number(p?.sizeBytes ?? 0n);
  return {
    target,
    lun,
    backing: l.backingPath === '' ? { kind: 'memory', sizeBytes } : { kind: 'file', path: l.backingPath, sizeBytes },
    params: {
      logicalBlockSize: p?.logicalBlockSize ?? 0,
      physicalBlockSize: p?.physicalBlockSize ?? 0,
      serial: p?.serial ?? '',
      wwn: (p?.wwn ?? '').toLowerCase(),
      readOnly: p?.readOnly ?? false,
      ...(p?.product ? { product: p.product } : {}),
    },
  };
}

/** ListControllers as plain observed state. */
export function observedFromList(res: ListControllersResponse): ObservedController[] {
  return res.controllers.map((c) => ({
    id: c.id,
    socketPath: c.socketPath,
    numRequestQueues: c.numRequestQueues,
    luns: c.luns.map(observedLun),
  }));
}

function addressOf(controllerId: string, target: number, lun: number): string {
  return `${controllerId} ${target}:${lun}`;
}

/** A backing in one string, for messages and comparison: a path, "(memory)" or iscsi://portal/iqn/lun. */
export function describeBacking(b: Backing): string {
  switch (b.kind) {
    case 'file':
      return b.path;
    case 'memory':
      return '(memory)';
    case 'hostDevice':
      return b.path;
    case 'iscsi':
      return `iscsi://${b.portal}/${b.iqn}/${b.lun}${b.initiatorName === undefined ? '' : ` as ${b.initiatorName}`}`;
  }
}

/** Differences between two passthrough policies (absent timeout = the engine's default). */
function policyChanges(o: PassthroughPolicy, d: PassthroughPolicy): string[] {
  const changes: string[] = [];
  if (o.rawio !== d.rawio) changes.push(`rawio ${o.rawio} → ${d.rawio}`);
  if ((o.timeoutMs ?? 0) !== (d.timeoutMs ?? 0)) changes.push(`timeout ${o.timeoutMs ?? 'default'} → ${d.timeoutMs ?? 'default'} ms`);
  const text = (v: string | undefined) => (v === undefined ? '(any)' : v);
  if ((o.expectedWwn ?? '').toLowerCase() !== (d.expectedWwn ?? '').toLowerCase()) changes.push(`expected wwn ${text(o.expectedWwn)} → ${text(d.expectedWwn)}`);
  if ((o.expectedSerial ?? '') !== (d.expectedSerial ?? '')) changes.push(`expected serial ${text(o.expectedSerial)} → ${text(d.expectedSerial)}`);
  return changes;
}

/** Differences other than capacity between an observed and a desired LUN. */
export function identityChanges(observed: LunSpec, desired: LunSpec): string[] {
  const changes: string[] = [];
  if (describeBacking(observed.backing) !== describeBacking(desired.backing) || observed.backing.kind !== desired.backing.kind) {
    changes.push(`backing ${describeBacking(observed.backing)} → ${describeBacking(desired.backing)}`);
  }
  if (isPassthrough(observed.backing) || isPassthrough(desired.backing)) {
    if (isPassthrough(observed.backing) && isPassthrough(desired.backing)) changes.push(...policyChanges(observed.backing.policy, desired.backing.policy));
    return changes;
  }
  const o = observed.params;
  const d = desired.params;
  if (o === undefined || d === undefined) {
    if (o !== d) changes.push('parameters');
    return changes;
  }
  if (o.serial !== d.serial) changes.push(`serial ${o.serial} → ${d.serial}`);
  if (o.wwn.toLowerCase() !== d.wwn.toLowerCase()) changes.push(`wwn 0x${o.wwn} → 0x${d.wwn}`);
  if (o.logicalBlockSize !== d.logicalBlockSize) changes.push(`logicalBlockSize ${o.logicalBlockSize} → ${d.logicalBlockSize}`);
  if (o.physicalBlockSize !== d.physicalBlockSize) changes.push(`physicalBlockSize ${o.physicalBlockSize} → ${d.physicalBlockSize}`);
  if (o.readOnly !== d.readOnly) changes.push(`readOnly ${o.readOnly} → ${d.readOnly}`);
  return changes;
}

/** The capacity of an emulated backing; undefined for passthrough (the device's own). */
function emulatedSize(b: Backing): number | undefined {
  return isPassthrough(b) ? undefined : b.sizeBytes;
}

/** The plan (pure). `managed` says which observed controllers serve owns. */
export function planReconcile(desired: DesiredState, observed: readonly ObservedController[], managed: (c: ObservedController) => boolean): ReconcilePlan {
  const creates: ReconcileAction[] = [];
  const detaches: ReconcileAction[] = [];
  const attaches: ReconcileAction[] = [];
  const resizes: ReconcileAction[] = [];
  const notices: string[] = [];
  const observedById = new Map(observed.map((c) => [c.id, c]));
  const wanted = new Map<string, DesiredLun>();
  for (const l of desired.luns) wanted.set(addressOf(l.controllerId, l.spec.target, l.spec.lun), l);

  for (const c of desired.controllers) {
    const seen = observedById.get(c.id);
    if (seen === undefined) creates.push({ kind: 'createController', controller: c });
    else if (seen.numRequestQueues !== c.numRequestQueues) {
      notices.push(`controller ${c.id} runs with ${seen.numRequestQueues} request queue(s), the manifests now ask for ${c.numRequestQueues}: kept as it is (a running VM's controller cannot change); restart vhba serve and the VM to apply it`);
    }
  }

  for (const c of observed) {
    if (!managed(c)) continue;
    for (const spec of c.luns) {
      const want = wanted.get(addressOf(c.id, spec.target, spec.lun));
      if (want === undefined) {
        detaches.push({ kind: 'detachLun', controllerId: c.id, target: spec.target, lun: spec.lun, reason: 'no manifest asks for it' });
        continue;
      }
      const changes = identityChanges(spec, want.spec);
      if (changes.length > 0) {
        notices.push(`${want.key} at ${c.id} ${spec.target}:${spec.lun} is replaced (the guest sees it removed and added): ${changes.join(', ')}`);
        detaches.push({ kind: 'detachLun', controllerId: c.id, target: spec.target, lun: spec.lun, reason: `replaced: ${changes.join(', ')}` });
        attaches.push({ kind: 'attachLun', controllerId: c.id, key: want.key, spec: want.spec });
        continue;
      }
      const from = emulatedSize(spec.backing);
      const to = emulatedSize(want.spec.backing);
      if (from === undefined || to === undefined) continue; // passthrough: never resized
      if (to > from) resizes.push({ kind: 'resizeLun', controllerId: c.id, key: want.key, target: spec.target, lun: spec.lun, fromBytes: from, toBytes: to });
      else if (to < from) {
        notices.push(`${want.key}: spec.capacity ${to} bytes is smaller than the running disk's ${from} bytes; shrinking is refused (it would cut off data the guest may use), the disk keeps ${from} bytes`);
      }
    }
  }

  for (const l of desired.luns) {
    const c = observedById.get(l.controllerId);
    const present = c?.luns.some((s) => s.target === l.spec.target && s.lun === l.spec.lun) ?? false;
    if (!present) attaches.push({ kind: 'attachLun', controllerId: l.controllerId, key: l.key, spec: l.spec });
  }
  return { actions: [...creates, ...detaches, ...attaches, ...resizes], notices };
}

/** What running a plan did. */
export interface ExecutionReport {
  applied: ReconcileAction[];
  /** Failed actions with the engine's message. */
  failures: { action: ReconcileAction; message: string }[];
  /** Passthrough disks attached by this run: disk key → the device the engine found. */
  devices: Map<string, DeviceIdentity>;
}

/** The AttachLun request for a spec: emulated backings with their
 * parameters, passthrough backings with their policy and no parameters. */
export function attachRequest(controllerId: string, spec: LunSpec): MessageInitShape<typeof AttachLunRequestSchema> {
  const address = { target: spec.target, lun: spec.lun };
  const b = spec.backing;
  if (isPassthrough(b)) {
    const p = b.policy;
    const passthrough = { rawio: p.rawio, timeoutMs: p.timeoutMs ?? 0, expectedWwn: p.expectedWwn ?? '', expectedSerial: p.expectedSerial ?? '' };
    return b.kind === 'hostDevice'
      ? { controllerId, address, backing: { case: 'hostDevice', value: { path: b.path } }, passthrough }
      : { controllerId, address, backing: { case: 'iscsi', value: { portal: b.portal, iqn: b.iqn, lun: b.lun, initiatorName: b.initiatorName ?? '' } }, passthrough };
  }
  const params = spec.params;
  if (params === undefined) throw new Error(`LUN ${spec.target}:${spec.lun}: an emulated backing needs parameters`);
  return {
    controllerId,
    address,
    backing: b.kind === 'file' ? { case: 'file', value: { path: b.path } } : { case: 'memory', value: {} },
    parameters: {
      sizeBytes: BigInt(b.sizeBytes),
      logicalBlockSize: params.logicalBlockSize,
      physicalBlockSize: params.physicalBlockSize,
      serial: params.serial,
      wwn: params.wwn,
      readOnly: params.readOnly,
      product: params.product ?? '',
    },
  };
}

/** Describes an action in one line (logs, output). */
export function describeAction(a: ReconcileAction): string {
  switch (a.kind) {
    case 'createController':
      return `create controller ${a.controller.id} at ${a.controller.socketPath} (${a.controller.numRequestQueues} request queue(s))`;
    case 'detachLun':
      return `detach ${a.controllerId} ${a.target}:${a.lun} (${a.reason})`;
    case 'attachLun':
      return `attach ${a.key} at ${a.controllerId} ${a.spec.target}:${a.spec.lun}`;
    case 'resizeLun':
      return `grow ${a.key} at ${a.controllerId} ${a.target}:${a.lun} from ${a.fromBytes} to ${a.toBytes} bytes`;
  }
}

/** Runs the actions in order through the control API. A failed action is
 * reported and the rest still run (they concern other disks, or are safe to
 * try: an attach into an address whose detach failed gets ALREADY_EXISTS). */
export async function executeReconcile(client: EngineClient, actions: readonly ReconcileAction[], log: Logger): Promise<ExecutionReport> {
  const report: ExecutionReport = { applied: [], failures: [], devices: new Map() };
  for (const action of actions) {
    try {
      switch (action.kind) {
        case 'createController':
          await mkdir(dirname(action.controller.socketPath), { recursive: true, mode: 0o700 });
          await client.createController({ id: action.controller.id, socketPath: action.controller.socketPath, numRequestQueues: action.controller.numRequestQueues });
          break;
        case 'detachLun':
          await client.detachLun({ controllerId: action.controllerId, address: { target: action.target, lun: action.lun } });
          break;
        case 'attachLun': {
          const { spec } = action;
          if (spec.backing.kind === 'file') await mkdir(dirname(spec.backing.path), { recursive: true });
          const answer = await client.attachLun(attachRequest(action.controllerId, spec));
          if (answer.device !== undefined) report.devices.set(action.key, deviceFromMessage(answer.device));
          break;
        }
        case 'resizeLun':
          await client.resizeLun({ controllerId: action.controllerId, address: { target: action.target, lun: action.lun }, sizeBytes: BigInt(action.toBytes) });
          break;
      }
      report.applied.push(action);
      log.info({ action: action.kind }, describeAction(action));
    } catch (error) {
      const e = error as { details?: string; message?: string };
      const message = e.details ?? e.message ?? String(error);
      report.failures.push({ action, message });
      log.error({ action: action.kind, err: message }, `failed: ${describeAction(action)}`);
    }
  }
  return report;
}
