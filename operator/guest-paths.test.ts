import { describe, expect, it } from 'vitest';
import { expectedPassthroughWwn, predictGuestPaths, wwnFromByIdPath } from './guest-paths.ts';

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

describe('wwnFromByIdPath', () => {
  const naa6 = `6${'0123456789ABCDEF'.repeat(2).slice(0, 31)}`;

  it('reads the NAA designator from udev\'s wwn-0x<naa> and scsi-3<naa> names, lowercased', () => {
    expect(wwnFromByIdPath('/dev/disk/by-id/wwn-0x5000C500ABCDEF01')).toBe('5000c500abcdef01');
    expect(wwnFromByIdPath('/dev/disk/by-id/scsi-35000c500abcdef01')).toBe('5000c500abcdef01');
    expect(wwnFromByIdPath(`/dev/disk/by-id/scsi-3${naa6}`)).toBe(naa6.toLowerCase());
    expect(wwnFromByIdPath(`/dev/disk/by-id/wwn-0x${naa6}`)).toBe(naa6.toLowerCase());
  });

  it('round-trips with predictGuestPaths', () => {
    for (const path of predictGuestPaths({ serial: 'S', wwn: '3a1b2c3d4e5f6071' })) expect(wwnFromByIdPath(path)).toBe('3a1b2c3d4e5f6071');
  });

  it('names no WWN for partitions, other by-id names, other directories or malformed designators', () => {
    for (const path of [
      '/dev/disk/by-id/wwn-0x5000c500abcdef01-part1', // a partition, not the LUN
      '/dev/disk/by-id/scsi-SATA_ST4000_ZA1B2C3D', // vendor/model/serial, no NAA
      '/dev/disk/by-id/scsi-1LIO-ORG_disk0', // T10 vendor ID
      '/dev/disk/by-id/ata-ST4000DM004_ZA1B2C3D',
      '/dev/disk/by-path/wwn-0x5000c500abcdef01',
      '/dev/sdb', '/dev/sg3',
      '/dev/disk/by-id/wwn-0x5000c500abcdef', // too short
      '/dev/disk/by-id/wwn-0x1000c500abcdef01', // NAA 1 is not a WWN we accept
      '/dev/disk/by-id/wwn-0x6000c500abcdef01', // NAA 6 needs 32 digits
      '/dev/disk/by-id/scsi-35000c500abcdef01/../sda',
    ]) expect(wwnFromByIdPath(path), path).toBeUndefined();
  });
});

describe('expectedPassthroughWwn', () => {
  it('prefers the spec, else the path\'s WWN, else nothing', () => {
    expect(expectedPassthroughWwn('5000000000000001', '/dev/disk/by-id/wwn-0x5000c500abcdef01')).toBe('5000000000000001');
    expect(expectedPassthroughWwn(undefined, '/dev/disk/by-id/wwn-0x5000c500abcdef01')).toBe('5000c500abcdef01');
    expect(expectedPassthroughWwn(undefined, '/dev/sg3')).toBeUndefined();
    expect(expectedPassthroughWwn(undefined, undefined)).toBeUndefined();
  });
});
