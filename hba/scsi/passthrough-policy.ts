// Which of the guest's commands a passthrough LUN (issue 8) keeps from the
// device. The guest owns the whole LUN (as with QEMU's scsi-block): reads,
// writes, MODE SELECT, PERSISTENT RESERVE OUT, FORMAT UNIT all reach it. What
// is refused by default is what reaches past the LUN: the drive's firmware,
// the drive behind a SAT layer, its security state and its identity, which
// other users of the device (the host, other initiators) depend on, and the
// vendor-specific opcodes whose effect nobody here can know. A LUN attached
// with `rawio: true` refuses nothing. REPORT LUNS is never the device's: the
// LUN inventory the guest sees is ours (ScsiTarget answers it).
//
// The native data path (hba/native/src/scsi_fastpath.cc) takes the same
// decision from refusedOpcodeBitmap() and hands the opcodes in
// deferredOpcodeBitmap() to JS (PassthroughUnit) instead of the device.

/** Why each opcode is refused unless the LUN has rawio. */
function buildRefusedOpcodes(): ReadonlyMap<number, string> {
  const refused = new Map<number, string>([
    [0x3b, 'WRITE BUFFER can download microcode to the device (SPC-4 §6.49)'],
    [0x85, 'ATA PASS-THROUGH(16) reaches the ATA drive itself: DOWNLOAD MICROCODE, SECURITY commands (SAT-3 §12.2.3)'],
    [0xa1, 'ATA PASS-THROUGH(12) reaches the ATA drive itself: DOWNLOAD MICROCODE, SECURITY commands (SAT-3 §12.2.2)'],
    [0xa4, 'MAINTENANCE OUT changes what every user of the device sees: SET IDENTIFYING INFORMATION, SET TARGET PORT GROUPS (SPC-4 §6.43, §6.45)'],
    [0xb5, 'SECURITY PROTOCOL OUT can lock the device for every user (SPC-4 §6.41)'],
  ]);
  for (let opcode = 0xc0; opcode <= 0xff; opcode++) {
    refused.set(opcode, 'vendor-specific operation code: effect unknown (SPC-4 §4.2.5.1, groups 6 and 7)');
  }
  return refused;
}

/** Opcodes refused with ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE
 * unless the LUN has rawio, each with the reason. */
export const REFUSED_OPCODES: ReadonlyMap<number, string> = buildRefusedOpcodes();

/** Opcodes the native path hands to JS instead of the device: REPORT LUNS
 * A0h (the LUN inventory is ours, SPC-4 §6.33) and INQUIRY 12h (VPD B0h gets
 * MAXIMUM TRANSFER LENGTH lowered to the host path's limit, SBC-3 §6.6.3). */
export const JS_OWNED_OPCODES: ReadonlySet<number> = new Set([0xa0, 0x12]);

/** Whether `opcode` is kept from the device under the LUN's policy. */
export function isRefused(opcode: number, rawio: boolean): boolean {
  return !rawio && REFUSED_OPCODES.has(opcode);
}

/** Length of an opcode bitmap: one bit per opcode 00h..FFh. */
export const OPCODE_BITMAP_BYTES = 32;

/** A 32-byte bitmap with bit (opcode & 7) of byte (opcode >> 3) set for each
 * opcode (the layout NativePassthroughLunConfig takes). Throws a RangeError
 * for anything that is not an integer 0..255. */
export function opcodeBitmap(opcodes: Iterable<number>): Buffer {
  const bitmap = Buffer.alloc(OPCODE_BITMAP_BYTES);
  for (const opcode of opcodes) {
    if (!Number.isInteger(opcode) || opcode < 0 || opcode > 0xff) throw new RangeError(`opcode ${opcode}: must be an integer 0..255`);
    bitmap[opcode >> 3]! |= 1 << (opcode & 7);
  }
  return bitmap;
}

/** Whether `opcode`'s bit is set in a bitmap built by opcodeBitmap(). */
export function bitmapHas(bitmap: Buffer, opcode: number): boolean {
  return ((bitmap[(opcode >> 3) & 0x1f] ?? 0) & (1 << (opcode & 7))) !== 0;
}

/** The refused opcodes as a bitmap: all zeros with rawio. */
export function refusedOpcodeBitmap(rawio: boolean): Buffer {
  return opcodeBitmap(rawio ? [] : REFUSED_OPCODES.keys());
}

/** JS_OWNED_OPCODES as a bitmap (NativePassthroughLunConfig.deferredOpcodes). */
export function deferredOpcodeBitmap(): Buffer {
  return opcodeBitmap(JS_OWNED_OPCODES);
}
