import { describe, expect, it } from 'vitest';
import { formatColumns, formatGuestTable } from './guest-table.ts';

describe('guest table', () => {
  it('aligns columns', () => {
    expect(formatColumns([['a', 'bb', 'c'], ['ccc', 'd', 'e']])).toBe('a    bb  c\nccc  d   e');
  });

  it('shows each disk and the disks not served', () => {
    const text = formatGuestTable([{
      vmName: 'vm1',
      controllers: [{ index: 0, id: 'vm1/hba0', socketPath: '/s/vm1/hba0.sock', numQueues: 1 }],
      disks: [{
        key: 'default/a', vmName: 'vm1', controller: 0, target: 1, lun: 300, serial: 'SER', wwn: '3000000000000001',
        sizeBytes: 64 * 2 ** 20, logicalBlockSize: 4096, physicalBlockSize: 4096, readOnly: true, backingPath: '/d/a.img',
        guestDevicePaths: ['/dev/disk/by-id/scsi-33000000000000001', '/dev/disk/by-id/wwn-0x3000000000000001'],
      }],
    }], [{ key: 'default/b', vmName: 'vm1', reason: 'AddressConflict', message: 'address 0:1:300 is already used by default/a' }]);
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^VM\s+DISK\s+HBA\s+C:T:L\s+SERIAL\s+WWN\s+SIZE\s+BLOCKS\s+RO\s+GUEST PATHS$/);
    expect(lines[1]).toMatch(/^vm1\s+default\/a\s+hba0 q1\s+0:1:300\s+SER\s+0x3000000000000001\s+64Mi\s+4096\/4096\s+yes\s+\/dev\/disk\/by-id\/scsi-33000000000000001 \/dev\/disk\/by-id\/wwn-0x3000000000000001$/);
    expect(text).toContain('Not served:\n  default/b (VM vm1): AddressConflict: address 0:1:300 is already used by default/a');
  });
});
