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

/** The guest view as text, followed by disks that are not served and why. */
export function formatGuestTable(vms: readonly GuestVm[], skipped: readonly SkippedDisk[]): string {
  const rows: string[][] = [[...HEADERS]];
  for (const vm of vms) {
    for (const d of vm.disks) {
      const socket = vm.controllers.find((c) => c.index === d.controller);
      rows.push([
        vm.vmName,
        d.key,
        `hba${d.controller}${socket === undefined ? '' : ` q${socket.numQueues}`}`,
        `${d.controller}:${d.target}:${d.lun}`,
        d.serial,
        `0x${d.wwn}`,
        formatBytes(d.sizeBytes),
        `${d.logicalBlockSize}/${d.physicalBlockSize}`,
        d.readOnly ? 'yes' : 'no',
        d.guestDevicePaths.join(' '),
      ]);
    }
  }
  let text = formatColumns(rows);
  if (skipped.length > 0) {
    text += '\n\nNot served:\n';
    text += skipped.map((s) => `  ${s.key} (VM ${s.vmName}): ${s.reason}: ${s.message}`).join('\n');
  }
  return `${text}\n`;
}
