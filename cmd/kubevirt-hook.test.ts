import { describe, expect, it } from 'vitest';
import { controllersFromVmi, hookQemuArgs, parseControllersAnnotation, runKubevirtHook, transformDomainXml } from './kubevirt-hook.ts';

// A trimmed domain as virt-launcher builds it: one container disk and one
// PVC volume "vhba" that KubeVirt turned into a placeholder file disk.
const DOMAIN = `<domain type="kvm" xmlns="http://libvirt.org/schemas/domain/1.0">
  <name>default_vm1</name>
  <memory unit="b">1073741824</memory>
  <devices>
    <disk device="disk" type="file">
      <source file="/var/run/kubevirt-ephemeral-disks/disk-data/containerdisk/disk.qcow2"></source>
      <target bus="virtio" dev="vda"></target>
    </disk>
    <disk device="disk" type="file">
      <source file="/var/run/kubevirt-private/vmi-disks/vhba/disk.img"></source>
      <target bus="virtio" dev="vdb"></target>
    </disk>
  </devices>
</domain>
`;

const HBA = [{ volume: 'vhba', hba: 0, queues: 2 }];

describe('transformDomainXml', () => {
  it('adds memfd shared memory, the qemu namespace and the -chardev/-device pair, and drops the placeholder disk', () => {
    expect(transformDomainXml(DOMAIN, HBA)).toBe(`<domain type="kvm" xmlns="http://libvirt.org/schemas/domain/1.0" xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>default_vm1</name>
  <memory unit="b">1073741824</memory>
  <devices>
    <disk device="disk" type="file">
      <source file="/var/run/kubevirt-ephemeral-disks/disk-data/containerdisk/disk.qcow2"></source>
      <target bus="virtio" dev="vda"></target>
    </disk>
  </devices>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <qemu:commandline><qemu:arg value='-chardev'/><qemu:arg value='socket,id=vhba-hba0,path=/var/run/kubevirt-private/vmi-disks/vhba/hba0.sock'/><qemu:arg value='-device'/><qemu:arg value='vhost-user-scsi-pci,id=vhba-hba0,chardev=vhba-hba0,num_queues=2'/></qemu:commandline>
</domain>
`);
  });

  it('removes the placeholder disks of volumes listed without an hba', () => {
    const out = transformDomainXml(DOMAIN, [{ volume: 'other', hba: 1, queues: 1 }, { volume: 'vhba', queues: 1 }]);
    expect(out).not.toContain('vmi-disks/vhba/disk.img');
    expect(out).toContain('containerdisk/disk.qcow2');
    expect(out).toContain(`<qemu:arg value='socket,id=vhba-hba1,path=/var/run/kubevirt-private/vmi-disks/other/hba1.sock'/>`);
    expect(() => transformDomainXml(DOMAIN, [{ volume: 'vhba', queues: 1 }])).toThrow(/no entry names an hba/);
  });

  it('is unchanged without controllers', () => {
    expect(transformDomainXml(DOMAIN, [])).toBe(DOMAIN);
  });

  it('replaces an existing memoryBacking source and access, keeping hugepages', () => {
    const xml = `<domain type='kvm'><memoryBacking><hugepages/><source type='file'/><access mode='private'/></memoryBacking></domain>`;
    const out = transformDomainXml(xml, HBA);
    expect(out).toContain(`<memoryBacking><hugepages/><source type='memfd'/><access mode='shared'/></memoryBacking>`);
    expect(out).not.toContain(`type='file'`);
    expect(out).not.toContain(`mode='private'`);
  });

  it('appends to an existing qemu:commandline under the prefix already bound', () => {
    const xml = `<domain type='kvm' xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'><q:commandline><q:arg value='-s'/></q:commandline></domain>`;
    const out = transformDomainXml(xml, [{ volume: 'd', hba: 3, queues: 1 }], '/x/');
    expect(out).toBe(
      `<domain type='kvm' xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'><q:commandline><q:arg value='-s'/>` +
        `<q:arg value='-chardev'/><q:arg value='socket,id=vhba-hba3,path=/x/d/hba3.sock'/>` +
        `<q:arg value='-device'/><q:arg value='vhost-user-scsi-pci,id=vhba-hba3,chardev=vhba-hba3,num_queues=1'/></q:commandline>` +
        `  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>\n</domain>`,
    );
  });

  it('refuses a qemu prefix bound to another namespace and XML without <domain>', () => {
    expect(() => transformDomainXml(`<domain xmlns:qemu='urn:other'></domain>`, HBA)).toThrow(/bound to another namespace/);
    expect(() => transformDomainXml(`<notdomain/>`, HBA)).toThrow(/no <domain>/);
  });

  it('escapes attribute values (a quote in the volumes dir stays inside the attribute)', () => {
    const out = transformDomainXml(`<domain></domain>`, HBA, `/a'b&c`);
    expect(out).toContain(`path=/a&apos;b&amp;c/vhba/hba0.sock'`);
  });
});

describe('the annotation', () => {
  it('parses a valid list and defaults queues to 1', () => {
    expect(parseControllersAnnotation('[{"volume":"vhba","hba":0},{"volume":"vhba","hba":1,"queues":4},{"volume":"more"}]')).toEqual([
      { volume: 'vhba', hba: 0, queues: 1 },
      { volume: 'vhba', hba: 1, queues: 4 },
      { volume: 'more', queues: 1 },
    ]);
  });

  it.each([
    ['not json', /not JSON/],
    ['[]', /list of 1\.\.16/],
    ['[{"volume":"Bad_Name","hba":0}]', /volume: want a volume name/],
    ['[{"volume":"v","hba":16}]', /hba: want an integer 0\.\.15/],
    ['[{"volume":"v","hba":0,"queues":0}]', /queues: want an integer 1\.\.64/],
    ['[{"volume":"v","hba":1},{"volume":"w","hba":1}]', /1 given twice/],
  ])('rejects %s', (value, message) => {
    expect(() => parseControllersAnnotation(value)).toThrow(message);
  });

  it('reads it from a VMI, [] when absent', () => {
    expect(controllersFromVmi({ metadata: { annotations: { 'vhba.io/controllers': '[{"volume":"v","hba":2}]' } } })).toEqual([{ volume: 'v', hba: 2, queues: 1 }]);
    expect(controllersFromVmi({ metadata: {} })).toEqual([]);
  });
});

describe('hookQemuArgs', () => {
  it('is qemu-args without the memfd backend pair', () => {
    expect(hookQemuArgs([{ volume: 'a,b', hba: 0, queues: 1 }], '/v')).toEqual([
      '-chardev', 'socket,id=vhba-hba0,path=/v/a,,b/hba0.sock',
      '-device', 'vhost-user-scsi-pci,id=vhba-hba0,chardev=vhba-hba0,num_queues=1',
    ]);
  });
});

describe('runKubevirtHook (sidecar-shim convention)', () => {
  it('prints the new domain for onDefineDomain --vmi --domain', async () => {
    let out = '';
    const vmi = JSON.stringify({ metadata: { annotations: { 'vhba.io/controllers': '[{"volume":"vhba","hba":0,"queues":2}]' } } });
    const code = await runKubevirtHook(['onDefineDomain', '--vmi', vmi, '--domain', DOMAIN], (t) => (out += t));
    expect(code).toBe(0);
    expect(out).toBe(transformDomainXml(DOMAIN, HBA));
  });

  it('rejects an unknown verb', async () => {
    await expect(runKubevirtHook(['preCloudInitIso'])).rejects.toThrow(/want 'onDefineDomain'/);
  });
});
