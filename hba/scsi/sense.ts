// Fixed-format sense data (SPC-4 §4.5.3) and the named sense codes the target
// reports. Every SCSI failure in hba/scsi is a ScsiError carrying one of the
// constants below; the logical unit turns it into CHECK CONDITION + sense.

/** Sense keys (SPC-4 §4.5.6, table 48). */
export const SenseKey = {
  NO_SENSE: 0x0,
  RECOVERED_ERROR: 0x1,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  ABORTED_COMMAND: 0xb,
  MISCOMPARE: 0xe,
} as const;

/** A sense key with its additional sense code and qualifier. */
export interface SenseCode {
  readonly key: number;
  readonly asc: number;
  readonly ascq: number;
  /** The SPC-4 name of the ASC/ASCQ pair, for logs and tests. */
  readonly name: string;
}

function code(key: number, asc: number, ascq: number, name: string): SenseCode {
  return Object.freeze({ key, asc, ascq, name });
}

/** NO SENSE / NO ADDITIONAL SENSE INFORMATION (REQUEST SENSE with nothing pending). */
export const senseNoSense = code(SenseKey.NO_SENSE, 0x00, 0x00, 'NO ADDITIONAL SENSE INFORMATION');
/** ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE. */
export const senseInvalidOpcode = code(SenseKey.ILLEGAL_REQUEST, 0x20, 0x00, 'INVALID COMMAND OPERATION CODE');
/** ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE. */
export const senseLbaOutOfRange = code(SenseKey.ILLEGAL_REQUEST, 0x21, 0x00, 'LOGICAL BLOCK ADDRESS OUT OF RANGE');
/** ILLEGAL REQUEST / INVALID FIELD IN CDB. */
export const senseInvalidFieldInCdb = code(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00, 'INVALID FIELD IN CDB');
/** ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED. */
export const senseLogicalUnitNotSupported = code(SenseKey.ILLEGAL_REQUEST, 0x25, 0x00, 'LOGICAL UNIT NOT SUPPORTED');
/** ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST. */
export const senseInvalidFieldInParameterList = code(SenseKey.ILLEGAL_REQUEST, 0x26, 0x00, 'INVALID FIELD IN PARAMETER LIST');
/** ILLEGAL REQUEST / PARAMETER LIST LENGTH ERROR. */
export const senseParameterListLengthError = code(SenseKey.ILLEGAL_REQUEST, 0x1a, 0x00, 'PARAMETER LIST LENGTH ERROR');
/** ILLEGAL REQUEST / SAVING PARAMETERS NOT SUPPORTED. */
export const senseSavingParametersNotSupported = code(SenseKey.ILLEGAL_REQUEST, 0x39, 0x00, 'SAVING PARAMETERS NOT SUPPORTED');
/** DATA PROTECT / WRITE PROTECTED. */
export const senseWriteProtected = code(SenseKey.DATA_PROTECT, 0x27, 0x00, 'WRITE PROTECTED');
/** NOT READY / LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE. */
export const senseNotReady = code(SenseKey.NOT_READY, 0x04, 0x00, 'LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE');
/** NOT READY / MEDIUM NOT PRESENT. */
export const senseMediumNotPresent = code(SenseKey.NOT_READY, 0x3a, 0x00, 'MEDIUM NOT PRESENT');
/** MEDIUM ERROR / UNRECOVERED READ ERROR (the backend failed a read). */
export const senseMediumErrorRead = code(SenseKey.MEDIUM_ERROR, 0x11, 0x00, 'UNRECOVERED READ ERROR');
/** MEDIUM ERROR / WRITE ERROR (the backend failed a write, flush or discard). */
export const senseMediumErrorWrite = code(SenseKey.MEDIUM_ERROR, 0x0c, 0x00, 'WRITE ERROR');
/** MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION. */
export const senseMiscompareDuringVerify = code(SenseKey.MISCOMPARE, 0x1d, 0x00, 'MISCOMPARE DURING VERIFY OPERATION');
/** HARDWARE ERROR / INTERNAL TARGET FAILURE. */
export const senseInternalTargetFailure = code(SenseKey.HARDWARE_ERROR, 0x44, 0x00, 'INTERNAL TARGET FAILURE');
/** UNIT ATTENTION / POWER ON, RESET, OR BUS DEVICE RESET OCCURRED. */
export const senseUaPowerOnReset = code(SenseKey.UNIT_ATTENTION, 0x29, 0x00, 'POWER ON, RESET, OR BUS DEVICE RESET OCCURRED');
/** UNIT ATTENTION / MODE PARAMETERS CHANGED. */
export const senseUaModeParametersChanged = code(SenseKey.UNIT_ATTENTION, 0x2a, 0x01, 'MODE PARAMETERS CHANGED');
/** UNIT ATTENTION / CAPACITY DATA HAS CHANGED. */
export const senseUaCapacityDataChanged = code(SenseKey.UNIT_ATTENTION, 0x2a, 0x09, 'CAPACITY DATA HAS CHANGED');
/** UNIT ATTENTION / REPORTED LUNS DATA HAS CHANGED. */
export const senseUaReportedLunsDataChanged = code(SenseKey.UNIT_ATTENTION, 0x3f, 0x0e, 'REPORTED LUNS DATA HAS CHANGED');

/** Points at the offending field (sense-key specific bytes, SPC-4 §4.5.2.4.2). */
export interface FieldPointer {
  /** true: the field is in the CDB (C/D = 1); false: in the parameter list. */
  inCdb: boolean;
  /** Byte offset of the field, 0..65535. */
  byte: number;
  /** Bit of that byte (0..7) where the field's most significant bit sits, if meaningful. */
  bit?: number;
}

/** Optional parts of fixed-format sense data. */
export interface SenseDetails {
  /** INFORMATION field (e.g. the failing LBA or miscompare offset); VALID is set when it fits in 32 bits. */
  information?: bigint;
  fieldPointer?: FieldPointer;
}

/** Length of the fixed-format sense data we build: 8 header bytes + 10 additional. */
export const FIXED_SENSE_LENGTH = 18;

/** Builds fixed-format sense data, current error (response code 70h), SPC-4 §4.5.3. */
export function buildFixedSense(sense: SenseCode, details: SenseDetails = {}): Buffer {
  const data = Buffer.alloc(FIXED_SENSE_LENGTH);
  data[0] = 0x70;
  data[2] = sense.key & 0x0f;
  const info = details.information;
  if (info !== undefined && info >= 0n && info <= 0xffff_ffffn) {
    data[0] |= 0x80; // VALID: the INFORMATION field is meaningful
    data.writeUInt32BE(Number(info), 3);
  }
  data[7] = FIXED_SENSE_LENGTH - 8; // ADDITIONAL SENSE LENGTH
  data[12] = sense.asc;
  data[13] = sense.ascq;
  const fp = details.fieldPointer;
  if (fp) {
    let byte15 = 0x80; // SKSV
    if (fp.inCdb) byte15 |= 0x40; // C/D
    if (fp.bit !== undefined) byte15 |= 0x08 | (fp.bit & 0x07); // BPV + BIT POINTER
    data[15] = byte15;
    data.writeUInt16BE(fp.byte & 0xffff, 16);
  }
  return data;
}

/** A SCSI failure: becomes CHECK CONDITION with this sense. */
export class ScsiError extends Error {
  readonly sense: SenseCode;
  readonly details: SenseDetails;
  constructor(sense: SenseCode, details: SenseDetails = {}) {
    super(sense.name);
    this.name = 'ScsiError';
    this.sense = sense;
    this.details = details;
  }
  /** The fixed-format sense bytes for this failure. */
  senseData(): Buffer {
    return buildFixedSense(this.sense, this.details);
  }
}

/** INVALID FIELD IN CDB pointing at `byte` (and `bit`) of the CDB. */
export function invalidFieldInCdb(byte: number, bit?: number): ScsiError {
  return new ScsiError(senseInvalidFieldInCdb, { fieldPointer: { inCdb: true, byte, bit } });
}

/** INVALID FIELD IN PARAMETER LIST pointing at `byte` (and `bit`) of the parameter data. */
export function invalidFieldInParameterList(byte: number, bit?: number): ScsiError {
  return new ScsiError(senseInvalidFieldInParameterList, { fieldPointer: { inCdb: false, byte, bit } });
}

/** Decoded fixed-format sense, for tests and logs. */
export interface DecodedSense {
  responseCode: number;
  key: number;
  asc: number;
  ascq: number;
  information?: number;
  fieldPointer?: FieldPointer;
}

/** Decodes fixed-format sense data (70h/71h); undefined for anything else or too short. */
export function decodeFixedSense(data: Buffer): DecodedSense | undefined {
  if (data.length < 14) return undefined;
  const responseCode = data[0]! & 0x7f;
  if (responseCode !== 0x70 && responseCode !== 0x71) return undefined;
  const decoded: DecodedSense = { responseCode, key: data[2]! & 0x0f, asc: data[12]!, ascq: data[13]! };
  if (data[0]! & 0x80) decoded.information = data.readUInt32BE(3);
  if (data.length >= 18 && data[15]! & 0x80) {
    const b = data[15]!;
    decoded.fieldPointer = { inCdb: (b & 0x40) !== 0, byte: data.readUInt16BE(16) };
    if (b & 0x08) decoded.fieldPointer.bit = b & 0x07;
  }
  return decoded;
}
