// A native PassthroughDevice (SG_IO or libiscsi, hba/native/index.ts) as the
// SCSI layer's ScsiDevicePort (hba/scsi/passthrough-unit.ts), for the
// commands that take the JS path: those the native queue worker defers
// (INQUIRY, REPORT LUNS, anything while our unit attention is pending) and
// the attach-time identity probe.
//  - The CDB goes out at its own length (SPC-4 §4.2.5.1 group code), not the
//    32-byte CDB area of the virtio-scsi request: SG_IO's cmd_len and the
//    iSCSI CDB field carry exactly that many bytes.
//  - A virtio-scsi response code other than OK (virtio 1.2 §5.6.6.1) means
//    the command did not complete at the device: it becomes the matching
//    ServiceFailure (SAM-5 §5.1), and framing.ts maps it back.
//  - Residual (SG_IO resid, iSCSI residual count) gives the data-in actually
//    transferred and the data-out the device consumed.
import type { PassthroughDevice, PassthroughOutcome } from '../native/index.ts';
import type { ScsiDevicePort } from '../scsi/passthrough-unit.ts';
import { ScsiError, senseInvalidFieldInCdb, senseInvalidOpcode } from '../scsi/sense.ts';
import { Status, type ScsiResult, type ServiceFailure } from '../scsi/types.ts';
import { Response, SERVICE_FAILURE_RESPONSE } from '../virtio-scsi/framing.ts';

/** Largest CDB a virtio-scsi request carries (virtio 1.2 §5.6.4 cdb_size default 32). */
const MAX_CDB_LENGTH = 32;
const VARIABLE_LENGTH_CDB = 0x7f;

/** The CDB length an opcode implies (SPC-4 §4.2.5.1, table 8: GROUP CODE in
 * bits 7..5): 6, 10, 16 or 12 bytes; 7Fh is variable length (SPC-4 §4.2.4,
 * ADDITIONAL CDB LENGTH in byte 7, so byte 7 + 8). Undefined for the
 * reserved group 3 (other than 7Fh), the vendor-specific groups 6 and 7
 * (their lengths are the vendor's secret), or a variable-length CDB longer
 * than `available` bytes. */
export function cdbLengthOf(cdb: Buffer, available = cdb.length): number | undefined {
  if (cdb.length === 0) return undefined;
  const opcode = cdb[0]!;
  let length: number | undefined;
  switch (opcode >> 5) {
    case 0: length = 6; break;
    case 1: case 2: length = 10; break;
    case 4: length = 16; break;
    case 5: length = 12; break;
    case 3: if (opcode === VARIABLE_LENGTH_CDB && cdb.length >= 8) length = cdb[7]! + 8; break;
    default: break;
  }
  return length !== undefined && length <= Math.min(available, cdb.length, MAX_CDB_LENGTH) ? length : undefined;
}

/** The ServiceFailure a virtio-scsi response code stands for; undefined for
 * OK. Codes a device path should never produce (OVERRUN, INCORRECT_LUN, TMF
 * codes) are 'failure'. */
export function serviceFailureOfResponse(response: number): ServiceFailure | undefined {
  if (response === Response.OK) return undefined;
  for (const [failure, code] of Object.entries(SERVICE_FAILURE_RESPONSE) as [ServiceFailure, number][]) {
    if (code === response) return failure;
  }
  return 'failure';
}

/** A native outcome as a ScsiResult for a command with `dataOutLength`
 * bytes of data-out and room for `dataInCapacity` bytes of data-in. */
export function resultOfOutcome(outcome: PassthroughOutcome, dataOutLength: number, dataInCapacity: number): ScsiResult {
  const failure = serviceFailureOfResponse(outcome.response);
  if (failure) return { serviceFailure: failure, status: Status.GOOD };
  const residual = Number.isSafeInteger(outcome.residual) && outcome.residual > 0 ? outcome.residual : 0;
  const result: ScsiResult = { status: outcome.status & 0xff };
  if (outcome.sense.length > 0) result.sense = Buffer.from(outcome.sense);
  if (dataInCapacity > 0) {
    const transferred = Math.max(0, Math.min(dataInCapacity - residual, outcome.dataIn.length));
    result.dataIn = outcome.dataIn.subarray(0, transferred);
  } else if (dataOutLength > 0) {
    result.dataOutConsumed = Math.max(0, dataOutLength - residual);
  }
  return result;
}

/** Told when a command did not complete (for the log: the native error text). */
export type ServiceFailureListener = (failure: ServiceFailure, error: string, opcode: number) => void;

/** The ScsiDevicePort over one open PassthroughDevice. */
export class PassthroughPort implements ScsiDevicePort {
  readonly device: PassthroughDevice;
  readonly #timeoutMs: number;
  readonly #onFailure: ServiceFailureListener | undefined;
  #closed = false;

  constructor(device: PassthroughDevice, options: { timeoutMs: number; onServiceFailure?: ServiceFailureListener }) {
    if (!Number.isSafeInteger(options.timeoutMs) || options.timeoutMs <= 0) throw new RangeError(`timeoutMs ${options.timeoutMs}: must be a positive integer`);
    this.device = device;
    this.#timeoutMs = options.timeoutMs;
    this.#onFailure = options.onServiceFailure;
  }

  /** Runs one command at the device. Never rejects: a CDB of unknown length
   * gets CHECK CONDITION here, a closed device BAD_TARGET, and a device that
   * rejects the call (a contract breach) FAILURE. */
  async execute(cdb: Buffer, dataOut: Buffer, dataInCapacity: number): Promise<ScsiResult> {
    const opcode = cdb[0] ?? 0;
    const length = cdbLengthOf(cdb);
    if (length === undefined) {
      const code = opcode === VARIABLE_LENGTH_CDB ? senseInvalidFieldInCdb : senseInvalidOpcode;
      return { status: Status.CHECK_CONDITION, sense: new ScsiError(code).senseData() };
    }
    if (this.#closed) return { serviceFailure: 'bad-target', status: Status.GOOD };
    const options: { dataOut?: Buffer; dataInLength?: number; timeoutMs: number } = { timeoutMs: this.#timeoutMs };
    if (dataOut.length > 0) options.dataOut = dataOut;
    else if (dataInCapacity > 0) options.dataInLength = dataInCapacity;
    let outcome: PassthroughOutcome;
    try {
      outcome = await this.device.execute(Buffer.from(cdb.subarray(0, length)), options);
    } catch (err) {
      const failure: ServiceFailure = this.#closed ? 'bad-target' : 'failure';
      this.#onFailure?.(failure, err instanceof Error ? err.message : String(err), opcode);
      return { serviceFailure: failure, status: Status.GOOD };
    }
    const result = resultOfOutcome(outcome, dataOut.length, dataOut.length > 0 ? 0 : dataInCapacity);
    if (result.serviceFailure) this.#onFailure?.(result.serviceFailure, outcome.error, opcode);
    return result;
  }

  /** Closes the device handle (idempotent); later commands get BAD_TARGET. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.device.close();
  }
}
