// The planner: where each disk lives on its VM's virtual HBAs, and which
// serial and WWN it carries. PURE: no I/O, no clock, no Kubernetes. The same
// function serves `vhba serve` and the operator.
//
// Rules, in the order they are applied (per VM, disks ordered by key so the
// result never depends on input order):
//  1. An already-assigned disk never moves and keeps its identity. If its spec
//     now asks for another address, serial, WWN, profile or VM, the change is
//     reported (SpecChangeIgnored) and the assignment kept.
//  2. New pinned disks: the pinned address is honoured or refused with a
//     condition naming the disk that holds it.
//  3. New unpinned `shared` disks: their own target (LUN 0) on controller 0,
//     the lowest target with no LUNs.
//  4. New unpinned `dedicated` disks: a controller of their own — the lowest
//     index ≥ 1 with no disks — at target 0, LUN 0.
//  Controller 0 is the shared one; a dedicated disk's controller carries no
//  other disk. Limits: LIMITS.maxControllersPerVm controllers per VM, 256
//  targets per controller, 16,384 LUNs per target (virtio 1.2 §5.6.6.1).
//  Identity: the spec's serial/WWN, or derived from the disk's identity seed
//  (identity.ts), unique within the VM; an explicit value another disk of the
//  VM already has is refused (DuplicateSerial / DuplicateWwn).
//  Passthrough disks (deviceType lun, issue 8) get an address like any disk
//  but no identity: the guest sees the device's own. Their serial/WWN are the
//  spec's expected values (checked by the engine at attach) or '' (unknown
//  here); expected values take part in the uniqueness checks, '' never does,
//  and derived identities of other disks avoid them.
import { deriveSerial, deriveUnique, deriveWwn } from './identity.ts';
import { LIMITS, formatAddress, type DiskAddress, type IoProfile, type PinnedAddress } from './api/virtualdisk.ts';

/** What the planner needs to know about one disk. */
export interface DiskIntent {
  /** Unique key, "namespace/name"; orders disks and names them in messages. */
  key: string;
  /** Seed for derived identity: the key in `vhba serve`, the UID in the operator. */
  identitySeed: string;
  /** The VM's identity: spec.vmName in `vhba serve`, "namespace/vmName" in the operator. */
  vmName: string;
  ioProfile: IoProfile;
  address?: PinnedAddress;
  serial?: string;
  /** Lowercase hex without 0x. */
  wwn?: string;
  /** deviceType lun: identity is the device's own; serial/wwn are what it must have, never derived. */
  passthrough?: boolean;
}

/** A disk's place and identity, as persisted between plans. */
export interface Assignment extends DiskAddress {
  key: string;
  vmName: string;
  ioProfile: IoProfile;
  /** Passthrough disks: the expected serial, or '' (the device's, unknown here). */
  serial: string;
  /** Lowercase hex without 0x. Passthrough disks: the expected WWN, or ''. */
  wwn: string;
}

/** Assignments by disk key. */
export type Assignments = ReadonlyMap<string, Assignment>;

/** Why a disk is (not) assigned. */
export const PlanReason = {
  Assigned: 'Assigned',
  SpecChangeIgnored: 'SpecChangeIgnored',
  AddressConflict: 'AddressConflict',
  ControllerInUse: 'ControllerInUse',
  ControllerDedicated: 'ControllerDedicated',
  InvalidAddress: 'InvalidAddress',
  NoFreeTarget: 'NoFreeTarget',
  NoFreeController: 'NoFreeController',
  DuplicateSerial: 'DuplicateSerial',
  DuplicateWwn: 'DuplicateWwn',
  IdentityExhausted: 'IdentityExhausted',
} as const;
export type PlanReason = (typeof PlanReason)[keyof typeof PlanReason];

/** The Assigned condition of one disk. */
export interface PlanCondition {
  type: 'Assigned';
  status: 'True' | 'False';
  reason: PlanReason;
  message: string;
}

/** The outcome for one disk. serial/wwn are what it has, or would have;
 * '' for a passthrough disk whose device identity is not known here. */
export interface DiskPlanResult {
  ok: boolean;
  vmName: string;
  address?: DiskAddress;
  serial: string;
  wwn: string;
  /** deviceType lun: serial/wwn are the expected device identity (or ''). */
  passthrough?: boolean;
  condition: PlanCondition;
}

/** The planner's answer: the new assignments and a result per disk (both in key order). */
export interface Plan {
  assignments: Map<string, Assignment>;
  results: Map<string, DiskPlanResult>;
}

/** Planning limits; tests shrink them to reach exhaustion quickly. */
export interface PlanLimits {
  maxControllersPerVm: number;
  maxTargets: number;
  maxLunsPerTarget: number;
}

/** The real limits. */
export const DEFAULT_PLAN_LIMITS: PlanLimits = {
  maxControllersPerVm: LIMITS.maxControllersPerVm,
  maxTargets: LIMITS.maxTargets,
  maxLunsPerTarget: LIMITS.maxLunsPerTarget,
};

/** Occupancy of one VM while planning. */
class VmState {
  readonly byAddress = new Map<string, string>();
  /** controller → keys of its disks. */
  readonly controllerDisks = new Map<number, string[]>();
  /** controller → key of the dedicated disk owning it. */
  readonly dedicatedOwner = new Map<number, string>();
  /** controller → targets with at least one LUN. */
  readonly usedTargets = new Map<number, Set<number>>();
  readonly serials = new Map<string, string>();
  readonly wwns = new Map<string, string>();
  /** Values derived identities must avoid: taken ones plus every explicit one of new disks. */
  readonly avoidSerials = new Set<string>();
  readonly avoidWwns = new Set<string>();

  holder(address: DiskAddress): string | undefined {
    return this.byAddress.get(formatAddress(address));
  }

  /** Lowest key of a disk on `controller`, if any. */
  firstDiskOn(controller: number): string | undefined {
    return [...(this.controllerDisks.get(controller) ?? [])].sort()[0];
  }

  commit(key: string, address: DiskAddress, ioProfile: IoProfile, serial: string, wwn: string): void {
    this.byAddress.set(formatAddress(address), key);
    const disks = this.controllerDisks.get(address.controller) ?? [];
    disks.push(key);
    this.controllerDisks.set(address.controller, disks);
    if (ioProfile === 'dedicated') this.dedicatedOwner.set(address.controller, key);
    const targets = this.usedTargets.get(address.controller) ?? new Set<number>();
    targets.add(address.target);
    this.usedTargets.set(address.controller, targets);
    // '' is a passthrough disk's unknown device identity: nothing to hold.
    if (serial !== '') {
      this.serials.set(serial, key);
      this.avoidSerials.add(serial);
    }
    if (wwn !== '') {
      this.wwns.set(wwn, key);
      this.avoidWwns.add(wwn);
    }
  }

  /** Why `key` may not be placed at `address` with `ioProfile`, or undefined if it may. */
  refusal(address: DiskAddress, ioProfile: IoProfile, limits: PlanLimits): PlanCondition | undefined {
    const invalid = rangeRefusal(address, ioProfile, limits);
    if (invalid !== undefined) return invalid;
    const at = formatAddress(address);
    const holder = this.holder(address);
    if (holder !== undefined) return refused(PlanReason.AddressConflict, `address ${at} is already used by ${holder}`);
    const owner = this.dedicatedOwner.get(address.controller);
    if (owner !== undefined) {
      return refused(PlanReason.ControllerDedicated, `controller ${address.controller} is dedicated to ${owner}`);
    }
    const occupant = this.firstDiskOn(address.controller);
    if (ioProfile === 'dedicated' && occupant !== undefined) {
      return refused(PlanReason.ControllerInUse, `controller ${address.controller} already carries ${occupant}; a dedicated disk needs a controller of its own`);
    }
    return undefined;
  }

  lowestEmptyController(limits: PlanLimits): number | undefined {
    for (let c = 1; c < limits.maxControllersPerVm; c++) {
      if ((this.controllerDisks.get(c) ?? []).length === 0) return c;
    }
    return undefined;
  }

  lowestFreeTarget(controller: number, limits: PlanLimits): number | undefined {
    const used = this.usedTargets.get(controller) ?? new Set<number>();
    for (let t = 0; t < limits.maxTargets; t++) if (!used.has(t)) return t;
    return undefined;
  }
}

/** Why an address is invalid whatever else is on the VM, or undefined. */
function rangeRefusal(address: DiskAddress, ioProfile: IoProfile, limits: PlanLimits): PlanCondition | undefined {
  if (!Number.isInteger(address.controller) || address.controller < 0 || address.controller >= limits.maxControllersPerVm) {
    return refused(PlanReason.InvalidAddress, `controller ${address.controller} is out of range; allowed: 0 to ${limits.maxControllersPerVm - 1} (${limits.maxControllersPerVm} controllers per VM)`);
  }
  if (!Number.isInteger(address.target) || address.target < 0 || address.target >= limits.maxTargets) {
    return refused(PlanReason.InvalidAddress, `target ${address.target} is out of range; allowed: 0 to ${limits.maxTargets - 1}`);
  }
  if (!Number.isInteger(address.lun) || address.lun < 0 || address.lun >= limits.maxLunsPerTarget) {
    return refused(PlanReason.InvalidAddress, `LUN ${address.lun} is out of range; allowed: 0 to ${limits.maxLunsPerTarget - 1}`);
  }
  if (ioProfile === 'dedicated' && address.controller === 0) {
    return refused(PlanReason.InvalidAddress, 'controller 0 is the shared controller; a dedicated disk needs a controller from 1 up');
  }
  return undefined;
}

function refused(reason: PlanReason, message: string): PlanCondition {
  return { type: 'Assigned', status: 'False', reason, message };
}

function byKey<T extends { key: string }>(a: T, b: T): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/** What in the spec differs from a kept assignment (empty when nothing). */
function ignoredChanges(intent: DiskIntent, a: Assignment): string[] {
  const changes: string[] = [];
  if (intent.vmName !== a.vmName) changes.push(`spec.vmName ${intent.vmName}`);
  if (intent.ioProfile !== a.ioProfile) changes.push(`spec.ioProfile ${intent.ioProfile}`);
  const pin = intent.address;
  if (pin !== undefined) {
    const wantController = pin.controller ?? (intent.ioProfile === 'shared' ? 0 : a.controller);
    if (wantController !== a.controller || pin.target !== a.target || pin.lun !== a.lun) {
      changes.push(`spec.address ${pin.controller ?? '_'}:${pin.target}:${pin.lun}`);
    }
  }
  if (intent.passthrough === true) return changes; // expected identity follows the spec (keptIdentity)
  if (intent.serial !== undefined && intent.serial !== a.serial) changes.push(`spec.serial ${JSON.stringify(intent.serial)}`);
  if (intent.wwn !== undefined && intent.wwn !== a.wwn) changes.push(`spec.wwn 0x${intent.wwn}`);
  return changes;
}

/** The identity a kept assignment carries on: the recorded one, or for a
 * passthrough disk the spec's expected one now (it is not ours to keep). */
function keptIdentity(intent: DiskIntent, a: Assignment): { serial: string; wwn: string } {
  return intent.passthrough === true ? { serial: intent.serial ?? '', wwn: intent.wwn ?? '' } : { serial: a.serial, wwn: a.wwn };
}

/** How a disk's identity reads in messages. */
function identityText(serial: string, wwn: string, passthrough: boolean | undefined): string {
  if (passthrough === true) return 'the device\'s own identity';
  return `serial ${serial} and WWN 0x${wwn}`;
}

/** Plans every disk. Throws only on a caller bug (two intents with one key). */
export function planAssignments(disks: readonly DiskIntent[], current: Assignments, limits: PlanLimits = DEFAULT_PLAN_LIMITS): Plan {
  const sorted = [...disks].sort(byKey);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]?.key === sorted[i - 1]?.key) throw new TypeError(`planAssignments: duplicate disk key ${sorted[i]?.key}`);
  }
  const vms = new Map<string, VmState>();
  const vm = (name: string): VmState => {
    let state = vms.get(name);
    if (state === undefined) vms.set(name, (state = new VmState()));
    return state;
  };
  const outcomes = new Map<string, { result: DiskPlanResult; assignment?: Assignment }>();

  // 1. Kept assignments. One that is invalid or clashes with an earlier kept
  //    one (a corrupt state file) is dropped and the disk planned afresh.
  const fresh: DiskIntent[] = [];
  for (const intent of sorted) {
    const a = current.get(intent.key);
    const state = a === undefined ? undefined : vm(a.vmName);
    const kept = a === undefined ? undefined : keptIdentity(intent, a);
    if (a === undefined || state === undefined || kept === undefined || a.key !== intent.key || state.refusal(a, a.ioProfile, limits) !== undefined
      || state.serials.has(kept.serial) || state.wwns.has(kept.wwn)) {
      fresh.push(intent);
      continue;
    }
    const address: DiskAddress = { controller: a.controller, target: a.target, lun: a.lun };
    state.commit(intent.key, address, a.ioProfile, kept.serial, kept.wwn);
    const changes = ignoredChanges(intent, a);
    const condition: PlanCondition = changes.length === 0
      ? { type: 'Assigned', status: 'True', reason: PlanReason.Assigned, message: `assigned to ${a.vmName} at ${formatAddress(address)}` }
      : {
        type: 'Assigned', status: 'True', reason: PlanReason.SpecChangeIgnored,
        message: `kept on ${a.vmName} at ${formatAddress(address)} with ${identityText(kept.serial, kept.wwn, intent.passthrough)}: an assigned disk never moves or changes identity; ignored: ${changes.join(', ')} (delete and recreate the disk to change them)`,
      };
    const result: DiskPlanResult = { ok: true, vmName: a.vmName, address, ...kept, condition };
    if (intent.passthrough === true) result.passthrough = true;
    outcomes.set(intent.key, { result, assignment: { ...a, ...kept } });
  }

  // Explicit identities of new disks are reserved against derivation up front.
  for (const intent of fresh) {
    const state = vm(intent.vmName);
    if (intent.serial !== undefined) state.avoidSerials.add(intent.serial);
    if (intent.wwn !== undefined) state.avoidWwns.add(intent.wwn);
  }

  // 2–4. New disks: pinned first, then unpinned, each group in key order.
  const ordered = [...fresh.filter((d) => d.address !== undefined), ...fresh.filter((d) => d.address === undefined)];
  const refusedDisks: { intent: DiskIntent; first: Extract<Evaluation, { ok: false }> }[] = [];
  for (const intent of ordered) {
    const state = vm(intent.vmName);
    const evaluation = evaluateNewDisk(intent, state, limits);
    if (!evaluation.ok) {
      refusedDisks.push({ intent, first: evaluation });
      continue;
    }
    const { address, serial, wwn } = evaluation;
    state.commit(intent.key, address, intent.ioProfile, serial, wwn);
    const result: DiskPlanResult = {
      ok: true, vmName: intent.vmName, address, serial, wwn,
      condition: { type: 'Assigned', status: 'True', reason: PlanReason.Assigned, message: `assigned to ${intent.vmName} at ${formatAddress(address)}` },
    };
    if (intent.passthrough === true) result.passthrough = true;
    outcomes.set(intent.key, { result, assignment: { key: intent.key, vmName: intent.vmName, ioProfile: intent.ioProfile, ...address, serial, wwn } });
  }
  // Refusals are explained against the final state, so that re-planning the
  // plan's own output gives the same reason and message (every check only
  // gets stricter as disks are committed, so a refusal stays a refusal).
  for (const { intent, first } of refusedDisks) {
    const final = evaluateNewDisk(intent, vm(intent.vmName), limits);
    outcomes.set(intent.key, { result: refusedResult(intent, final.ok ? first : final) });
  }

  const plan: Plan = { assignments: new Map(), results: new Map() };
  for (const intent of sorted) {
    const outcome = outcomes.get(intent.key);
    if (outcome === undefined) continue;
    plan.results.set(intent.key, outcome.result);
    if (outcome.assignment !== undefined) plan.assignments.set(intent.key, outcome.assignment);
  }
  return plan;
}

/** A new disk's outcome before it is committed. */
type Evaluation =
  | { ok: true; address: DiskAddress; serial: string; wwn: string }
  | { ok: false; condition: PlanCondition; serial?: string; wwn?: string };

/** Decides a new disk's address and identity against `state`, without
 * changing it. Checks run in a fixed order: state-free address checks, then
 * address occupancy, then identity. */
function evaluateNewDisk(intent: DiskIntent, state: VmState, limits: PlanLimits): Evaluation {
  const fail = (condition: PlanCondition, serial?: string, wwn?: string): Evaluation => ({ ok: false, condition, serial, wwn });
  const noController = () => fail(refused(PlanReason.NoFreeController,
    `VM ${intent.vmName} has no free controller for a dedicated disk (limit ${limits.maxControllersPerVm} controllers per VM, controller 0 shared)`));

  // Address.
  let address: DiskAddress;
  const pin = intent.address;
  if (pin !== undefined) {
    // An unset controller is checked as the first one the disk could get.
    const probe = pin.controller ?? (intent.ioProfile === 'dedicated' ? 1 : 0);
    const invalid = rangeRefusal({ controller: probe, target: pin.target, lun: pin.lun }, intent.ioProfile, limits);
    if (invalid !== undefined) return fail(invalid);
    let controller = pin.controller;
    if (controller === undefined && intent.ioProfile === 'dedicated') {
      controller = state.lowestEmptyController(limits);
      if (controller === undefined) return noController();
    }
    address = { controller: controller ?? 0, target: pin.target, lun: pin.lun };
  } else if (intent.ioProfile === 'dedicated') {
    const controller = state.lowestEmptyController(limits);
    if (controller === undefined) return noController();
    address = { controller, target: 0, lun: 0 };
  } else {
    const target = state.lowestFreeTarget(0, limits);
    if (target === undefined) {
      return fail(refused(PlanReason.NoFreeTarget, `controller 0 of VM ${intent.vmName} has all ${limits.maxTargets} targets in use; pin spec.address to share a target, or use ioProfile dedicated`));
    }
    address = { controller: 0, target, lun: 0 };
  }
  const refusal = state.refusal(address, intent.ioProfile, limits);
  if (refusal !== undefined) return fail(refusal);

  // Identity.
  let serial = intent.serial;
  if (serial !== undefined) {
    const holder = state.serials.get(serial);
    if (holder !== undefined) return fail(refused(PlanReason.DuplicateSerial, `serial ${JSON.stringify(serial)} is already used by ${holder} on VM ${intent.vmName}; serials must be unique per VM`));
  } else if (intent.passthrough === true) {
    serial = '';
  } else {
    serial = deriveUnique(intent.identitySeed, deriveSerial, state.avoidSerials);
    if (serial === undefined) return fail(refused(PlanReason.IdentityExhausted, 'no unique serial could be derived; set spec.serial'));
  }
  let wwn = intent.wwn;
  if (wwn !== undefined) {
    const holder = state.wwns.get(wwn);
    if (holder !== undefined) return fail(refused(PlanReason.DuplicateWwn, `WWN 0x${wwn} is already used by ${holder} on VM ${intent.vmName}; WWNs must be unique per VM`), serial);
  } else if (intent.passthrough === true) {
    wwn = '';
  } else {
    wwn = deriveUnique(intent.identitySeed, deriveWwn, state.avoidWwns);
    if (wwn === undefined) return fail(refused(PlanReason.IdentityExhausted, 'no unique WWN could be derived; set spec.wwn'), serial);
  }
  return { ok: true, address, serial, wwn };
}

/** The result for a refused disk: what it would carry, and why not. */
function refusedResult(intent: DiskIntent, evaluation: Extract<Evaluation, { ok: false }>): DiskPlanResult {
  if (intent.passthrough === true) {
    return { ok: false, vmName: intent.vmName, serial: intent.serial ?? '', wwn: intent.wwn ?? '', passthrough: true, condition: evaluation.condition };
  }
  return {
    ok: false,
    vmName: intent.vmName,
    serial: evaluation.serial ?? intent.serial ?? deriveSerial(intent.identitySeed),
    wwn: evaluation.wwn ?? intent.wwn ?? deriveWwn(intent.identitySeed),
    condition: evaluation.condition,
  };
}
