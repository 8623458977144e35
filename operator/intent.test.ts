import { describe, expect, it } from 'vitest';
import { validateVirtualDisk } from './api/validate.ts';
import { intentFromDisk } from './intent.ts';

function disk(extra: Record<string, unknown> = {}) {
  const r = validateVirtualDisk({
    apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk', metadata: { name: 'd', namespace: 'ns', uid: 'u-1' },
    spec: { vmName: 'vm', capacity: '1Gi', source: { file: { path: 'd.img' } }, ...extra },
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.disk;
}

describe('intentFromDisk', () => {
  it('serve mode: seed is namespace/name, VM is spec.vmName', () => {
    expect(intentFromDisk(disk())).toEqual({ key: 'ns/d', identitySeed: 'ns/d', vmName: 'vm', ioProfile: 'shared' });
  });

  it('operator mode: seed is the UID, VM is namespace/vmName; pins and identity carried', () => {
    expect(intentFromDisk(disk({ serial: 'S', wwn: '0x5000000000000001', address: { target: 2, lun: 3 } }), 'operator')).toEqual({
      key: 'ns/d', identitySeed: 'u-1', vmName: 'ns/vm', ioProfile: 'shared', serial: 'S', wwn: '5000000000000001', address: { target: 2, lun: 3 },
    });
  });

  it('a lun disk is a passthrough intent whose serial/WWN are the expected device identity', () => {
    const r = validateVirtualDisk({
      apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk', metadata: { name: 'p', namespace: 'ns' },
      spec: { vmName: 'vm', deviceType: 'lun', source: { hostDevice: { path: '/dev/disk/by-id/wwn-0x5000c500abcdef01' } }, wwn: '0x5000C500ABCDEF01' },
    });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(intentFromDisk(r.disk)).toEqual({ key: 'ns/p', identitySeed: 'ns/p', vmName: 'vm', ioProfile: 'shared', wwn: '5000c500abcdef01', passthrough: true });
  });

  it('a lun disk without spec.wwn expects the WWN its /dev/disk/by-id hostDevice path names; other paths expect none', () => {
    const lun = (path: string) => {
      const r = validateVirtualDisk({
        apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk', metadata: { name: 'p', namespace: 'ns', uid: 'u-p' },
        spec: { vmName: 'vm', deviceType: 'lun', source: { hostDevice: { path } } },
      });
      if (!r.ok) throw new Error(JSON.stringify(r.errors));
      return intentFromDisk(r.disk, 'operator');
    };
    expect(lun('/dev/disk/by-id/scsi-35000C500ABCDEF02').wwn).toBe('5000c500abcdef02');
    expect(lun('/dev/disk/by-id/wwn-0x5000c500abcdef02').wwn).toBe('5000c500abcdef02');
    expect(lun('/dev/sg3').wwn).toBeUndefined();
    expect(lun('/dev/disk/by-id/wwn-0x5000c500abcdef02-part1').wwn).toBeUndefined();
  });
});
