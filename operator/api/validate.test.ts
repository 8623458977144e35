import { describe, expect, it } from 'vitest';
import { validateVirtualDisk, type FieldError } from './validate.ts';

/** A valid manifest; tests change one thing at a time. */
function manifest(spec: Record<string, unknown> = {}, metadata: Record<string, unknown> = { name: 'd1' }): Record<string, unknown> {
  return {
    apiVersion: 'vhba.io/v1alpha1',
    kind: 'VirtualDisk',
    metadata,
    spec: { vmName: 'vm1', capacity: '256Mi', source: { file: { path: 'vm1/d1.img' } }, ...spec },
  };
}

function errorsOf(input: unknown): FieldError[] {
  const result = validateVirtualDisk(input);
  return result.ok ? [] : result.errors;
}

function fieldsOf(input: unknown): string[] {
  return errorsOf(input).map((e) => e.field);
}

describe('validateVirtualDisk: a valid disk', () => {
  it('normalises with defaults', () => {
    const result = validateVirtualDisk(manifest());
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.disk).toEqual({
      name: 'd1', namespace: 'default', key: 'default/d1', vmName: 'vm1', capacityBytes: 256 * 2 ** 20,
      source: { file: { path: 'vm1/d1.img' } }, deviceType: 'disk', readOnly: false,
      logicalBlockSize: 512, physicalBlockSize: 4096, ioProfile: 'shared', rawio: false,
    });
  });

  it('keeps every optional field and normalises the WWN', () => {
    const result = validateVirtualDisk(manifest(
      { serial: 'ABC 123', wwn: '0x5000C500ABCDEF01', readOnly: true, logicalBlockSize: 4096, physicalBlockSize: 4096,
        ioProfile: 'dedicated', address: { controller: 2, target: 3, lun: 300 }, numQueues: 4, storageClassName: 'fast' },
      { name: 'd1', namespace: 'ns', uid: 'u-1', generation: 3 },
    ));
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.disk).toMatchObject({
      key: 'ns/d1', uid: 'u-1', generation: 3, serial: 'ABC 123', wwn: '5000c500abcdef01', readOnly: true,
      logicalBlockSize: 4096, physicalBlockSize: 4096, ioProfile: 'dedicated',
      address: { controller: 2, target: 3, lun: 300 }, numQueues: 4, storageClassName: 'fast',
    });
  });

  it('accepts 32-digit NAA 6 WWNs, a 20-character serial and sources other than file', () => {
    expect(errorsOf(manifest({ wwn: '6' + 'a'.repeat(31), serial: 'S'.repeat(20) }))).toEqual([]);
    expect(errorsOf(manifest({ source: { pvc: { claimName: 'claim-1' } } }))).toEqual([]);
    const noSource = manifest({ storageClassName: 'vhba' });
    delete (noSource.spec as Record<string, unknown>).source;
    expect(errorsOf(noSource)).toEqual([]);
  });
});

describe('validateVirtualDisk: one error per bad field, naming what is allowed', () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['vmName upper case', { vmName: 'VM1' }, 'spec.vmName'],
    ['vmName too long', { vmName: 'a'.repeat(64) }, 'spec.vmName'],
    ['capacity missing', { capacity: undefined }, 'spec.capacity'],
    ['capacity garbage', { capacity: 'lots' }, 'spec.capacity'],
    ['capacity zero', { capacity: '0' }, 'spec.capacity'],
    ['capacity not a block multiple', { capacity: '1000' }, 'spec.capacity'],
    ['capacity not a 4096 multiple', { capacity: '1Ki', logicalBlockSize: 4096 }, 'spec.capacity'],
    ['serial empty', { serial: '' }, 'spec.serial'],
    ['serial too long', { serial: 'X'.repeat(21) }, 'spec.serial'],
    ['serial leading space', { serial: ' AB' }, 'spec.serial'],
    ['serial trailing space', { serial: 'AB ' }, 'spec.serial'],
    ['serial non-ASCII', { serial: 'AB\u00e9' }, 'spec.serial'],
    ['serial control char', { serial: 'A\tB' }, 'spec.serial'],
    ['serial not a string', { serial: 12 }, 'spec.serial'],
    ['wwn NAA 1', { wwn: '1000000000000001' }, 'spec.wwn'],
    ['wwn short', { wwn: '500000000000001' }, 'spec.wwn'],
    ['wwn NAA 6 with 16 digits', { wwn: '6000000000000001' }, 'spec.wwn'],
    ['wwn NAA 5 with 32 digits', { wwn: '5' + '0'.repeat(31) }, 'spec.wwn'],
    ['wwn non-hex', { wwn: '500000000000000g' }, 'spec.wwn'],
    ['readOnly string', { readOnly: 'yes' }, 'spec.readOnly'],
    ['logicalBlockSize 1024', { logicalBlockSize: 1024 }, 'spec.logicalBlockSize'],
    ['physicalBlockSize 8192', { physicalBlockSize: 8192 }, 'spec.physicalBlockSize'],
    ['physical smaller than logical', { logicalBlockSize: 4096, physicalBlockSize: 512 }, 'spec.physicalBlockSize'],
    ['ioProfile unknown', { ioProfile: 'turbo' }, 'spec.ioProfile'],
    ['deviceType unknown', { deviceType: 'tape' }, 'spec.deviceType'],
    ['deviceType lun on a file', { deviceType: 'lun', capacity: undefined }, 'spec.deviceType'],
    ['address controller 8', { address: { controller: 8, target: 0, lun: 0 } }, 'spec.address.controller'],
    ['address target 256', { address: { target: 256, lun: 0 } }, 'spec.address.target'],
    ['address lun 16384', { address: { target: 0, lun: 16384 } }, 'spec.address.lun'],
    ['address lun negative', { address: { target: 0, lun: -1 } }, 'spec.address.lun'],
    ['address lun fractional', { address: { target: 0, lun: 1.5 } }, 'spec.address.lun'],
    ['address target missing', { address: { lun: 0 } }, 'spec.address.target'],
    ['address unknown member', { address: { target: 0, lun: 0, bus: 1 } }, 'spec.address.bus'],
    ['address not an object', { address: '0:1:0' }, 'spec.address'],
    ['dedicated pinned on controller 0', { ioProfile: 'dedicated', address: { controller: 0, target: 0, lun: 0 } }, 'spec.address.controller'],
    ['numQueues 0', { numQueues: 0 }, 'spec.numQueues'],
    ['numQueues 65', { numQueues: 65 }, 'spec.numQueues'],
    ['source two members', { source: { file: { path: 'a' }, pvc: { claimName: 'b' } } }, 'spec.source'],
    ['source empty', { source: {} }, 'spec.source'],
    ['source unknown kind', { source: { nfs: { path: 'x' } } }, 'spec.source.nfs'],
    ['file path empty', { source: { file: { path: '' } } }, 'spec.source.file.path'],
    ['file path escapes', { source: { file: { path: '../etc/passwd' } } }, 'spec.source.file.path'],
    ['file path escapes deeper', { source: { file: { path: 'a/../../b' } } }, 'spec.source.file.path'],
    ['file path NUL', { source: { file: { path: 'a\0b' } } }, 'spec.source.file.path'],
    ['pvc bad name', { source: { pvc: { claimName: 'Bad_Name' } } }, 'spec.source.pvc.claimName'],
    ['hostDevice relative', { deviceType: 'lun', capacity: undefined, source: { hostDevice: { path: 'dev/sda' } } }, 'spec.source.hostDevice.path'],
    ['storageClassName bad', { storageClassName: 'UPPER' }, 'spec.storageClassName'],
    ['unknown spec field (typo)', { readonly: true }, 'spec.readonly'],
  ];
  it.each(cases)('%s', (_name, spec, field) => {
    const s = { ...spec };
    const input = manifest(s);
    for (const [k, v] of Object.entries(s)) if (v === undefined) delete (input.spec as Record<string, unknown>)[k];
    const errors = errorsOf(input);
    expect(errors.map((e) => e.field)).toEqual([field]);
    expect(errors[0]?.message).toMatch(/allowed|required|not a whole|exceeds/);
  });

  it('serial messages state the rule', () => {
    expect(errorsOf(manifest({ serial: 'X'.repeat(21) }))[0]?.message).toContain('1–20 printable ASCII characters (0x20–0x7E)');
  });

  it('a missing source without storageClassName is an error', () => {
    const input = manifest();
    delete (input.spec as Record<string, unknown>).source;
    expect(fieldsOf(input)).toEqual(['spec.source']);
  });
});

describe('validateVirtualDisk: the envelope', () => {
  it('checks apiVersion, kind, metadata and unknown top-level fields', () => {
    expect(fieldsOf({ ...manifest(), apiVersion: 'v1' })).toEqual(['apiVersion']);
    expect(fieldsOf({ ...manifest(), kind: 'Pod' })).toEqual(['kind']);
    expect(fieldsOf(manifest({}, { name: 'Bad Name' }))).toEqual(['metadata.name']);
    expect(fieldsOf(manifest({}, { name: 'ok', namespace: 'a.b' }))).toEqual(['metadata.namespace']);
    expect(fieldsOf(manifest({}, { name: 'ok', generation: -1 }))).toEqual(['metadata.generation']);
    expect(fieldsOf({ ...manifest(), extra: 1 })).toEqual(['extra']);
    expect(fieldsOf({ ...manifest(), metadata: undefined })).toEqual(['metadata']);
    expect(fieldsOf({ ...manifest(), spec: 'x' })).toEqual(['spec']);
  });

  it('never throws on junk, and reports several errors at once', () => {
    for (const junk of [null, undefined, 42, 'text', [], [manifest()], { spec: null }]) {
      expect(validateVirtualDisk(junk).ok).toBe(false);
    }
    expect(fieldsOf(manifest({ vmName: 'X', serial: '', capacity: '-1' })).sort()).toEqual(['spec.capacity', 'spec.serial', 'spec.vmName']);
  });

  it('ignores status in input', () => {
    expect(errorsOf({ ...manifest(), status: { phase: 'Ready' } })).toEqual([]);
  });
});

describe('validateVirtualDisk: deviceType lun (passthrough)', () => {
  /** A valid lun manifest: no capacity, geometry or readOnly (the device's own). */
  function lunManifest(spec: Record<string, unknown> = {}): Record<string, unknown> {
    const m = manifest({ deviceType: 'lun', source: { hostDevice: { path: '/dev/disk/by-id/wwn-0x5000c500abcdef01' } } });
    const s = m.spec as Record<string, unknown>;
    delete s.capacity;
    Object.assign(s, spec);
    for (const [k, v] of Object.entries(s)) if (v === undefined) delete s[k];
    return m;
  }

  it('normalises a hostDevice lun: capacity 0, rawio, expected identity kept', () => {
    const result = validateVirtualDisk(lunManifest({ rawio: true, serial: 'ZA1B2C3D', wwn: '0x5000C500ABCDEF01' }));
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.disk).toMatchObject({
      deviceType: 'lun', capacityBytes: 0, rawio: true, readOnly: false, serial: 'ZA1B2C3D', wwn: '5000c500abcdef01',
      source: { hostDevice: { path: '/dev/disk/by-id/wwn-0x5000c500abcdef01' } },
    });
  });

  it('accepts device paths other than by-id (a notice recommends by-id elsewhere)', () => {
    expect(errorsOf(lunManifest({ source: { hostDevice: { path: '/dev/sdb' } } }))).toEqual([]);
    expect(errorsOf(lunManifest({ source: { hostDevice: { path: '/dev/sg2' } } }))).toEqual([]);
  });

  it('normalises an iSCSI portal without a port to 3260 and keeps one that has it', () => {
    const iscsi = (portal: string, extra: Record<string, unknown> = {}) => validateVirtualDisk(lunManifest({ source: { iscsi: { portal, iqn: 'iqn.2003-01.org.example:disk1', lun: 3, ...extra } } }));
    const plain = iscsi('192.0.2.10');
    expect(plain.ok && plain.disk.source).toEqual({ iscsi: { portal: '192.0.2.10:3260', iqn: 'iqn.2003-01.org.example:disk1', lun: 3 } });
    const named = iscsi('san.example.com:3261', { initiatorName: 'iqn.2026-11.io.vhba:node1' });
    expect(named.ok && named.disk.source).toEqual({ iscsi: { portal: 'san.example.com:3261', iqn: 'iqn.2003-01.org.example:disk1', lun: 3, initiatorName: 'iqn.2026-11.io.vhba:node1' } });
    const v6 = iscsi('[2001:db8::1]');
    expect(v6.ok && v6.disk.source).toMatchObject({ iscsi: { portal: '[2001:db8::1]:3260' } });
    const v6port = iscsi('[2001:db8::1]:3262');
    expect(v6port.ok && v6port.disk.source).toMatchObject({ iscsi: { portal: '[2001:db8::1]:3262' } });
    for (const iqn of ['eui.02004567A425678D', 'naa.52004567BA64678D', 'naa.6' + '0'.repeat(31)]) {
      expect(errorsOf(lunManifest({ source: { iscsi: { portal: 'h', iqn, lun: 0 } } })), iqn).toEqual([]);
    }
  });

  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ['capacity', { capacity: '1Gi' }, 'spec.capacity', /device's own.*remove spec\.capacity/],
    ['logicalBlockSize', { logicalBlockSize: 4096 }, 'spec.logicalBlockSize', /device's own.*remove spec\.logicalBlockSize/],
    ['logicalBlockSize even when invalid', { logicalBlockSize: 1024 }, 'spec.logicalBlockSize', /device's own/],
    ['physicalBlockSize', { physicalBlockSize: 4096 }, 'spec.physicalBlockSize', /device's own/],
    ['readOnly', { readOnly: false }, 'spec.readOnly', /device's own.*remove spec\.readOnly/],
    ['storageClassName', { storageClassName: 'fast' }, 'spec.storageClassName', /not used by deviceType lun.*remove it/],
    ['rawio not a boolean', { rawio: 'yes' }, 'spec.rawio', /allowed: true, false/],
    ['no source', { source: undefined }, 'spec.source', /required for deviceType lun; allowed: source\.hostDevice \{path\} or source\.iscsi/],
    ['a file source', { source: { file: { path: 'a.img' } } }, 'spec.deviceType', /needs source\.hostDevice or source\.iscsi, not source\.file/],
    ['a pvc source', { source: { pvc: { claimName: 'c' } } }, 'spec.deviceType', /not source\.pvc/],
    ['device outside /dev', { source: { hostDevice: { path: '/var/disk.img' } } }, 'spec.source.hostDevice.path', /under \/dev\/.*by-id/],
    ['device escaping /dev', { source: { hostDevice: { path: '/dev/../etc/passwd' } } }, 'spec.source.hostDevice.path', /under \/dev\/ without "\." or "\.\." segments/],
    ['device relative', { source: { hostDevice: { path: 'sdb' } } }, 'spec.source.hostDevice.path', /absolute path/],
    ['device with an unknown member', { source: { hostDevice: { path: '/dev/sdb', readOnly: true } } }, 'spec.source.hostDevice.readOnly', /unknown field; allowed: path/],
    ['portal with a bad port', { source: { iscsi: { portal: 'h:70000', iqn: 'iqn.2003-01.org.example', lun: 0 } } }, 'spec.source.iscsi.portal', /"h:70000" is not a portal; allowed: host:port \(port 1–65535\)/],
    ['portal port 0', { source: { iscsi: { portal: 'h:0', iqn: 'iqn.2003-01.org.example', lun: 0 } } }, 'spec.source.iscsi.portal', /port 1–65535/],
    ['portal a URL', { source: { iscsi: { portal: 'iscsi://h/iqn', iqn: 'iqn.2003-01.org.example', lun: 0 } } }, 'spec.source.iscsi.portal', /allowed: host:port \(port 1–65535\) or host \(port 3260\)/],
    ['portal missing', { source: { iscsi: { iqn: 'iqn.2003-01.org.example', lun: 0 } } }, 'spec.source.iscsi.portal', /not a portal/],
    ['iqn without date', { source: { iscsi: { portal: 'h', iqn: 'iqn.example.org:x', lun: 0 } } }, 'spec.source.iscsi.iqn', /allowed: iqn\.YYYY-MM\.<reversed domain>/],
    ['iqn short eui', { source: { iscsi: { portal: 'h', iqn: 'eui.1234', lun: 0 } } }, 'spec.source.iscsi.iqn', /eui\.<16 hex digits>/],
    ['iqn too long', { source: { iscsi: { portal: 'h', iqn: `iqn.2003-01.org.example:${'x'.repeat(220)}`, lun: 0 } } }, 'spec.source.iscsi.iqn', /at most 223 characters/],
    ['iscsi lun 16384', { source: { iscsi: { portal: 'h', iqn: 'iqn.2003-01.org.example', lun: 16384 } } }, 'spec.source.iscsi.lun', /from 0 to 16383/],
    ['iscsi lun missing', { source: { iscsi: { portal: 'h', iqn: 'iqn.2003-01.org.example' } } }, 'spec.source.iscsi.lun', /from 0 to 16383/],
    ['initiatorName bad', { source: { iscsi: { portal: 'h', iqn: 'iqn.2003-01.org.example', lun: 0, initiatorName: 'node1' } } }, 'spec.source.iscsi.initiatorName', /not an iSCSI name/],
    ['iscsi unknown member', { source: { iscsi: { portal: 'h', iqn: 'iqn.2003-01.org.example', lun: 0, chap: 'x' } } }, 'spec.source.iscsi.chap', /allowed: portal, iqn, lun, initiatorName/],
    ['expected wwn malformed', { wwn: '0x1234' }, 'spec.wwn', /not a NAA WWN/],
  ];
  it.each(cases)('refuses %s, saying what to fix', (_name, spec, field, message) => {
    const errors = errorsOf(lunManifest(spec));
    expect(errors.map((e) => e.field)).toEqual([field]);
    expect(errors[0]?.message).toMatch(message);
  });

  it('hostDevice and iscsi sources need deviceType lun; rawio needs it too', () => {
    const onDisk = (spec: Record<string, unknown>) => errorsOf(manifest(spec));
    expect(onDisk({ source: { hostDevice: { path: '/dev/sdb' } } })).toEqual([
      { field: 'spec.deviceType', message: expect.stringMatching(/disk is an emulated disk, but source\.hostDevice is a whole SCSI device passed through; allowed: deviceType lun/) },
    ]);
    expect(onDisk({ source: { iscsi: { portal: 'h', iqn: 'iqn.2003-01.org.example', lun: 0 } } }).map((e) => e.field)).toEqual(['spec.deviceType']);
    expect(onDisk({ rawio: true })).toEqual([{ field: 'spec.rawio', message: expect.stringMatching(/applies to deviceType lun only.*remove it/) }]);
    expect(onDisk({ rawio: false }).map((e) => e.field)).toEqual(['spec.rawio']);
  });
});
