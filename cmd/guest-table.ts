// The table `vhba serve` prints: what each guest will see. Pure formatting.
import { formatBytes } from '../operator/api/quantity.ts';
import type { GuestVm, SkippedDisk } from './topology.ts';

/** Columns, in order. */
const HEADERS = ['VM', 'DISK', 'HBA', 'C:T:L', 'SERIAL', 'WWN', 'SIZE', 'BLOCKS', 'RO', 'GUEST PATHS'] as const;

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function formatColumns(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ').trimEnd())
    .join('\n');
}

/** The guest view as text, followed by disks that are not served and why.
 * A passthrough (lun) disk shows the device's identity and geometry once
 * the engine reported them ("?" before), and its attach failure if any. */
export function formatGuestTable(vms: readonly GuestVm[], skipped: readonly SkippedDisk[]): string {
  const rows: string[][] = [[...HEADERS]];
  const notAttached: string[] = [];
  for (const vm of vms) {
    for (const d of vm.disks) {
      const socket = vm.controllers.find((c) => c.index === d.controller);
      const address = `${d.controller}:${d.target}:${d.lun}`;
      const pt = d.passthrough;
      const known = pt === undefined || pt.device !== undefined;
      let paths = d.guestDevicePaths.join(' ');
      if (pt?.attachError !== undefined) {
        paths = '(not attached, see below)';
        notAttached.push(`  ${d.key} (VM ${vm.vmName}) at ${address}: ${d.backingPath}: ${pt.attachError}`);
      } else if (pt !== undefined && paths === '') {
        paths = known ? '(no NAA designator: see the guest\'s /dev/disk/by-id)' : '(the device\'s own)';
      }
      rows.push([
        vm.vmName,
        pt === undefined ? d.key : `${d.key} [lun ${d.backingPath}]`,
        `hba${d.controller}${socket === undefined ? '' : ` q${socket.numQueues}`}`,
        address,
        d.serial === '' ? '?' : d.serial,
        d.wwn === '' ? '?' : `0x${d.wwn}`,
        known ? formatBytes(d.sizeBytes) : '?',
        known ? `${d.logicalBlockSize}/${d.physicalBlockSize}` : '?',
        pt !== undefined ? 'dev' : d.readOnly ? 'yes' : 'no',
        paths,
      ]);
    }
  }
  let text = formatColumns(rows);
  if (notAttached.length > 0) text += `\n\nNot attached (retried at each pass; fix the device or the manifest):\n${notAttached.join('\n')}`;
  if (skipped.length > 0) {
    text += '\n\nNot served:\n';
    text += skipped.map((s) => `  ${s.key} (VM ${s.vmName}): ${s.reason}: ${s.message}`).join('\n');
  }
  return `${text}\n`;
}
