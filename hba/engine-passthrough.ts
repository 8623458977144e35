// The engine's passthrough steps (issue 8; hba/engine.ts calls them): check a
// hostDevice/iscsi backing, open the device through the native addon, ask it
// who it is (probeIdentity: INQUIRY, VPD 80h/83h, READ CAPACITY), hold it to
// the identity the caller expects, and flush it. Every failure is an
// EngineError whose message names the device and says what is wrong:
//  - INVALID_ARGUMENT: the backing names something that can never work (a
//    relative path, a file that is not a SCSI device, a bad iSCSI name);
//  - FAILED_PRECONDITION: the device is not as required now (absent, no
//    permission, login refused, another disk than expected, no logical unit);
//  - UNAVAILABLE: the device did not answer (portal unreachable, login or
//    command timed out, transport broke): retrying later may work.
import { realpath } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { PassthroughPort, type ServiceFailureListener } from './backends/passthrough-port.ts';
import type { PassthroughBacking } from './engine-api.ts';
import { EngineError, type EngineErrorCode } from './engine-errors.ts';
import type { PassthroughAddress, PassthroughDevice } from './native/index.ts';
import { ProbeCommandError, describeResult, probeIdentity, senseCodeOf } from './scsi/passthrough-identity.ts';
import { SenseKey } from './scsi/sense.ts';
import { Status, type DeviceIdentity, type ScsiResult } from './scsi/types.ts';

/** Per-command timeout when the policy sets none (engine-api.ts PassthroughPolicy). */
export const DEFAULT_PASSTHROUGH_TIMEOUT_MS = 30_000;
/** Largest per-command timeout a policy may set: one hour. */
export const MAX_PASSTHROUGH_TIMEOUT_MS = 3_600_000;

/** Opens a passthrough device (the addon's openPassthrough, or a test double). */
export type OpenPassthrough = (address: PassthroughAddress, options: { timeoutMs: number }) => Promise<PassthroughDevice>;

const NAA = /^([235][0-9a-f]{15}|6[0-9a-f]{31})$/;
const ISCSI_NAME = /^(iqn\.|eui\.|naa\.)\S+$/;
const ATTEMPTS_PAST_UNIT_ATTENTION = 3;

/** e.g. "host device /dev/disk/by-id/wwn-0x5000c500a1b2c3d4" or "iSCSI 192.0.2.10:3260 iqn.2001-04.com.example:disk1 lun 1". */
export function describePassthrough(b: PassthroughBacking): string {
  return b.kind === 'hostDevice' ? `host device ${b.path}` : `iSCSI ${b.portal} ${b.iqn} lun ${b.lun}`;
}

/** The per-command timeout of a backing's policy (0 or absent: the default). */
export function timeoutOf(b: PassthroughBacking): number {
  return b.policy.timeoutMs || DEFAULT_PASSTHROUGH_TIMEOUT_MS;
}

/** Throws INVALID_ARGUMENT naming the first field of `b` that cannot work. */
export function validatePassthroughBacking(b: PassthroughBacking): void {
  const bad = (message: string): never => {
    throw new EngineError('INVALID_ARGUMENT', message);
  };
  if (b.kind === 'hostDevice') {
    if (typeof b.path !== 'string' || !isAbsolute(b.path)) bad(`host device path ${JSON.stringify(b.path)} must be absolute (a /dev/disk/by-id/ link is the stable choice)`);
  } else {
    if (typeof b.portal !== 'string' || !/^[^\s/]+$/.test(b.portal)) bad(`iSCSI portal ${JSON.stringify(b.portal)} must be host or host:port, e.g. 192.0.2.10:3260`);
    if (typeof b.iqn !== 'string' || !ISCSI_NAME.test(b.iqn)) bad(`iSCSI target name ${JSON.stringify(b.iqn)} must be an iqn., eui. or naa. name`);
    if (!Number.isInteger(b.lun) || b.lun < 0 || b.lun > 16383) bad(`iSCSI lun ${b.lun}: must be 0..16383`);
    if (b.initiatorName !== undefined && !ISCSI_NAME.test(b.initiatorName)) bad(`iSCSI initiator name ${JSON.stringify(b.initiatorName)} must be an iqn., eui. or naa. name`);
  }
  const p = b.policy;
  if (typeof p !== 'object' || p === null || typeof p.rawio !== 'boolean') bad('passthrough policy: rawio (true or false) is required');
  if (p.timeoutMs !== undefined && (!Number.isInteger(p.timeoutMs) || p.timeoutMs < 0 || p.timeoutMs > MAX_PASSTHROUGH_TIMEOUT_MS)) {
    bad(`passthrough timeoutMs ${p.timeoutMs}: must be 0..${MAX_PASSTHROUGH_TIMEOUT_MS} (0 = ${DEFAULT_PASSTHROUGH_TIMEOUT_MS})`);
  }
  if (p.expectedWwn !== undefined && !NAA.test(p.expectedWwn)) {
    bad(`passthrough expectedWwn ${JSON.stringify(p.expectedWwn)} must be an NAA designator in lowercase hex without 0x (16 digits starting 2, 3 or 5, or 32 starting 6)`);
  }
  if (p.expectedSerial !== undefined && (p.expectedSerial.length === 0 || !/^[\x20-\x7e]+$/.test(p.expectedSerial))) {
    bad(`passthrough expectedSerial ${JSON.stringify(p.expectedSerial)} must be printable ASCII`);
  }
}

/** The address the addon opens. */
export function addressOf(b: PassthroughBacking): PassthroughAddress {
  if (b.kind === 'hostDevice') return { kind: 'sg', path: b.path };
  return { kind: 'iscsi', portal: b.portal, iqn: b.iqn, lun: b.lun, ...(b.initiatorName !== undefined ? { initiatorName: b.initiatorName } : {}) };
}

/** What makes two backings the same device: the resolved device node (a
 * by-id link and /dev/sdX are one disk), or portal + target + LUN. */
export async function deviceKey(b: PassthroughBacking): Promise<string> {
  if (b.kind === 'iscsi') return `iscsi:${b.portal.toLowerCase()}/${b.iqn.toLowerCase()}/${b.lun}`;
  const resolved = await realpath(b.path).catch(() => b.path);
  return `dev:${resolved}`;
}

/** The code an open failure gets, from the addon's message (hba/native/index.ts openPassthrough). */
export function openErrorCode(b: PassthroughBacking, message: string): EngineErrorCode {
  if (/not a block device|not a SCSI device|SG_IO not supported|invalid initiator name/i.test(message)) return 'INVALID_ARGUMENT';
  // No answer from the portal (libiscsi says "Can not reconnect right now"
  // when the TCP connect fails); a refused login (unknown target, LUN, ACL)
  // is an answer, and stays FAILED_PRECONDITION.
  if (b.kind === 'iscsi' && /cannot connect|can ?not reconnect|no login within|connection (refused|reset|lost)|unreachable|timed out/i.test(message)) return 'UNAVAILABLE';
  return 'FAILED_PRECONDITION';
}

/** An open, probed passthrough device. */
export interface OpenedPassthrough {
  port: PassthroughPort;
  identity: DeviceIdentity;
}

/** Opens the device, probes its identity and checks it against the policy's
 * expectedWwn/expectedSerial. The device is closed again on any failure. */
export async function openPassthroughLun(b: PassthroughBacking, open: OpenPassthrough, onServiceFailure?: ServiceFailureListener): Promise<OpenedPassthrough> {
  const what = describePassthrough(b);
  const timeoutMs = timeoutOf(b);
  let device: PassthroughDevice;
  try {
    device = await open(addressOf(b), { timeoutMs });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new EngineError(openErrorCode(b, message), `cannot open ${what}: ${message}`);
  }
  const port = new PassthroughPort(device, { timeoutMs, ...(onServiceFailure ? { onServiceFailure } : {}) });
  try {
    let identity: DeviceIdentity;
    try {
      identity = await probeIdentity(port);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const unreachable = err instanceof ProbeCommandError && err.result.serviceFailure !== undefined;
      throw new EngineError(unreachable ? 'UNAVAILABLE' : 'FAILED_PRECONDITION', `${what} (${device.description}) did not identify itself: ${message}`);
    }
    checkExpectedIdentity(b, identity);
    return { port, identity };
  } catch (err) {
    port.close();
    throw err;
  }
}

/** FAILED_PRECONDITION unless the device is the disk the policy names. */
export function checkExpectedIdentity(b: PassthroughBacking, identity: DeviceIdentity): void {
  const { expectedWwn, expectedSerial } = b.policy;
  if (expectedWwn !== undefined && identity.wwn !== expectedWwn.toLowerCase()) {
    throw new EngineError('FAILED_PRECONDITION', `${describePassthrough(b)} has WWN ${JSON.stringify(identity.wwn)} (VPD 83h), expected ${JSON.stringify(expectedWwn)}: not the disk the manifest names`);
  }
  if (expectedSerial !== undefined && identity.serial !== expectedSerial.trim()) {
    throw new EngineError('FAILED_PRECONDITION', `${describePassthrough(b)} has serial ${JSON.stringify(identity.serial)} (VPD 80h), expected ${JSON.stringify(expectedSerial)}: not the disk the manifest names`);
  }
}

/** SYNCHRONIZE CACHE(10) over the whole medium (SBC-3 §5.22: LBA 0, NUMBER
 * OF LOGICAL BLOCKS 0 = to the end), repeated past a unit attention (the
 * device may report one to us first, SAM-5 §5.14). Throws an EngineError
 * if the device does not complete it with GOOD. */
export async function synchronizeCache(port: PassthroughPort, what: string): Promise<void> {
  const cdb = Buffer.from([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  let result: ScsiResult | undefined;
  for (let attempt = 0; attempt < ATTEMPTS_PAST_UNIT_ATTENTION; attempt++) {
    result = await port.execute(cdb, Buffer.alloc(0), 0);
    if (result.serviceFailure || result.status !== Status.CHECK_CONDITION || senseCodeOf(result.sense)?.key !== SenseKey.UNIT_ATTENTION) break;
  }
  if (result!.serviceFailure) throw new EngineError('UNAVAILABLE', `${what}: SYNCHRONIZE CACHE did not complete: ${describeResult(result!)}`);
  if (result!.status !== Status.GOOD) throw new EngineError('FAILED_PRECONDITION', `${what}: SYNCHRONIZE CACHE failed: ${describeResult(result!)}`);
}
