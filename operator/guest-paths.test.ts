import { describe, expect, it } from 'vitest';
import { predictGuestPaths } from './guest-paths.ts';

describe('predictGuestPaths', () => {
  it('gives scsi-3<wwn> (scsi_id ID_SERIAL from the NAA designator) and wwn-0x<wwn>', () => {
    expect(predictGuestPaths({ serial: 'VHABC', wwn: '3a1b2c3d4e5f6071' })).toEqual([
      '/dev/disk/by-id/scsi-33a1b2c3d4e5f6071',
      '/dev/disk/by-id/wwn-0x3a1b2c3d4e5f6071',
    ]);
  });

  it('normalises case and a 0x prefix, and keeps all 32 digits of NAA 6', () => {
    const naa6 = '6' + 'ABCDEF0123456789'.repeat(2).slice(0, 31);
    expect(predictGuestPaths({ serial: 'S', wwn: `0x${naa6}` })).toEqual([
      `/dev/disk/by-id/scsi-3${naa6.toLowerCase()}`,
      `/dev/disk/by-id/wwn-0x${naa6.toLowerCase()}`,
    ]);
  });

  it('predicts the same names for a passthrough device from its own NAA designator, and none without one', () => {
    expect(predictGuestPaths({ serial: 'ZA1B2C3D', wwn: '5000c500abcdef01' })).toEqual([
      '/dev/disk/by-id/scsi-35000c500abcdef01',
      '/dev/disk/by-id/wwn-0x5000c500abcdef01',
    ]);
    // No NAA designator (EUI-64 or T10 vendor ID only): udev's names depend on what vhba does not know.
    expect(predictGuestPaths({ serial: 'ZA1B2C3D', wwn: '' })).toEqual([]);
  });
});
