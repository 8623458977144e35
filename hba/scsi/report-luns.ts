// REPORT LUNS (SPC-4 §6.33) and the 8-byte SAM-5 LUN format it reports
// (SAM-5 §4.7): single-level LUNs with peripheral device addressing (00b)
// below 256 and flat space addressing (01b) from 256 to 16,383.
import { invalidFieldInCdb } from './sense.ts';

/** Highest LUN flat space addressing can name (14 bits). */
export const MAX_LUN = 16383;

/** Encodes a LUN as 8 bytes, single level (SAM-5 §4.7.3): peripheral
 * device addressing, bus 0, for LUN < 256; flat space addressing otherwise. */
export function encodeLun(lun: number): Buffer {
  if (!Number.isInteger(lun) || lun < 0 || lun > MAX_LUN) throw new RangeError(`LUN ${lun} outside 0..${MAX_LUN}`);
  const out = Buffer.alloc(8);
  if (lun < 256) {
    out[1] = lun; // method 00b, bus identifier 0
  } else {
    out[0] = 0x40 | (lun >> 8); // method 01b
    out[1] = lun & 0xff;
  }
  return out;
}

/** Decodes the first addressing level (two bytes): peripheral device
 * addressing with bus 0, or flat space addressing. undefined for other
 * methods or a non-zero bus. */
export function decodeLunLevel(byte0: number, byte1: number): number | undefined {
  const method = byte0 >> 6;
  if (method === 0) return (byte0 & 0x3f) === 0 ? byte1 : undefined;
  if (method === 1) return ((byte0 & 0x3f) << 8) | byte1;
  return undefined;
}

/** Decodes an 8-byte single-level SAM LUN; undefined when it is not one
 * (bytes 2..7 must be zero: no second level). */
export function decodeLun(lun: Buffer): number | undefined {
  if (lun.length !== 8) return undefined;
  for (let i = 2; i < 8; i++) if (lun[i] !== 0) return undefined;
  return decodeLunLevel(lun[0]!, lun[1]!);
}

/** SELECT REPORT values (SPC-4 §6.33, table 207). */
export const SelectReport = { LOGICAL_UNITS: 0x00, WELL_KNOWN: 0x01, ALL: 0x02 } as const;

/** REPORT LUNS as decoded. */
export interface ReportLunsCommand {
  selectReport: number;
  allocationLength: number;
}

/** SELECT REPORT 00h/01h/02h; the administrative selections of SPC-5 are refused. */
export function parseReportLuns(cdb: Buffer): ReportLunsCommand {
  const selectReport = cdb[2]!;
  if (selectReport > SelectReport.ALL) throw invalidFieldInCdb(2);
  return { selectReport, allocationLength: cdb.readUInt32BE(6) };
}

/** The LUN list: 8-byte header with LUN LIST LENGTH, then one 8-byte entry
 * per LUN in ascending order. We have no well-known LUNs, so SELECT REPORT
 * 01h gives an empty list. */
export function reportLunsData(cmd: ReportLunsCommand, luns: Iterable<number>): Buffer {
  const listed = cmd.selectReport === SelectReport.WELL_KNOWN ? [] : [...luns].sort((a, b) => a - b);
  const data = Buffer.alloc(8 + listed.length * 8);
  data.writeUInt32BE(listed.length * 8, 0);
  listed.forEach((lun, i) => encodeLun(lun).copy(data, 8 + i * 8));
  return data;
}
