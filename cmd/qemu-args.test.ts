import { describe, expect, it } from 'vitest';
import { qemuArgsFor, runQemuArgs, shellQuote } from './qemu-args.ts';
import type { GuestVm } from './topology.ts';

const examples = new URL('../examples', import.meta.url).pathname;

async function run(argv: string[]) {
  let out = '';
  let err = '';
  const code = await runQemuArgs(argv, (t) => (out += t), (t) => (err += t));
  return { code, out, err };
}

describe('qemuArgsFor', () => {
  it('gives shared memfd memory and a chardev + vhost-user-scsi-pci pair per controller', () => {
    const vm: GuestVm = {
      vmName: 'vm1',
      disks: [],
      controllers: [
        { index: 0, id: 'vm1/hba0', socketPath: '/run/vhba/vm1/hba0.sock', numQueues: 1 },
        { index: 2, id: 'vm1/hba2', socketPath: '/run/a,b/vm1/hba2.sock', numQueues: 4 },
      ],
    };
    expect(qemuArgsFor(vm, '2G')).toEqual([
      '-object', 'memory-backend-memfd,id=vhba-mem,size=2G,share=on',
      '-machine', 'memory-backend=vhba-mem',
      '-chardev', 'socket,id=vhba-hba0,path=/run/vhba/vm1/hba0.sock',
      '-device', 'vhost-user-scsi-pci,id=vhba-hba0,chardev=vhba-hba0,num_queues=1',
      '-chardev', 'socket,id=vhba-hba2,path=/run/a,,b/vm1/hba2.sock',
      '-device', 'vhost-user-scsi-pci,id=vhba-hba2,chardev=vhba-hba2,num_queues=4',
    ]);
  });
});

describe('shellQuote', () => {
  it('leaves plain words alone and single-quotes the rest', () => {
    expect(shellQuote('-device')).toBe('-device');
    expect(shellQuote('a,b=c/d')).toBe('a,b=c/d');
    expect(shellQuote('has space')).toBe(`'has space'`);
    expect(shellQuote(`it's`)).toBe(`'it'\\''s'`);
  });
});

describe('runQemuArgs on the examples', () => {
  it('prints one argument per line by default', async () => {
    const { code, out } = await run(['--config', examples, '--socket-dir', '/run/vhba', '--vm', 'demo', '--memory', '512M']);
    expect(code).toBe(0);
    expect(out.trimEnd().split('\n')).toEqual([
      '-object', 'memory-backend-memfd,id=vhba-mem,size=512M,share=on',
      '-machine', 'memory-backend=vhba-mem',
      '-chardev', 'socket,id=vhba-hba0,path=/run/vhba/demo/hba0.sock',
      '-device', 'vhost-user-scsi-pci,id=vhba-hba0,chardev=vhba-hba0,num_queues=1',
      '-chardev', 'socket,id=vhba-hba1,path=/run/vhba/demo/hba1.sock',
      '-device', 'vhost-user-scsi-pci,id=vhba-hba1,chardev=vhba-hba1,num_queues=2',
    ]);
  });

  it('prints one shell line with --format shell', async () => {
    const { code, out } = await run(['--config', examples, '--socket-dir', '/run/my vms', '--vm', 'demo', '--format', 'shell']);
    expect(code).toBe(0);
    expect(out.split('\n')).toHaveLength(2);
    expect(out).toContain(`-chardev 'socket,id=vhba-hba0,path=/run/my vms/demo/hba0.sock'`);
    expect(out).toContain('size=1G');
  });

  it('exits 2 for an unknown VM, listing the known ones', async () => {
    const { code, err } = await run(['--config', examples, '--socket-dir', '/run/vhba', '--vm', 'other']);
    expect(code).toBe(2);
    expect(err).toContain('VMs in the config: demo');
  });

  it('rejects bad flag values with a UsageError', async () => {
    await expect(run(['--config', examples, '--socket-dir', '/s', '--vm', 'demo', '--memory', '1.5G'])).rejects.toThrow(/--memory "1.5G" is not a size/);
    await expect(run(['--config', examples, '--socket-dir', '/s', '--vm', 'demo', '--format', 'json'])).rejects.toThrow(/allowed: lines, shell/);
    await expect(run(['--config', examples, '--vm', 'demo'])).rejects.toThrow(/missing required flag --socket-dir/);
  });
});
