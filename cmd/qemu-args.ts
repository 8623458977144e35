// `vhba qemu-args`: the QEMU arguments that connect a VM to its vhba
// controllers. vhost-user needs the guest RAM shared with the backend, so the
// VM's memory comes from a shared memfd backend (docs/interop/vhost-user.rst,
// "memory must be shared"); each controller is a vhost-user-scsi-pci device
// on its own chardev socket.
import { formatLoadError } from '../operator/api/load.ts';
import { EXIT_USAGE, UsageError, oneOf, parseFlags, required } from './args.ts';
import { loadTopology, resolveDirs, type GuestVm } from './topology.ts';

/** Help text. */
export const QEMU_ARGS_USAGE = `Usage: vhba qemu-args --config <dir|file> --socket-dir <dir> --vm <name> [options]

Prints the QEMU arguments that attach VM <name> to its vhba controllers.

Options:
  --config <dir|file>   VirtualDisk manifests (*.yaml, *.yml, *.json)
  --socket-dir <dir>    where vhba serve puts <vm>/hba<N>.sock
  --state-dir <dir>     assignments written by vhba serve (default <socket-dir>/.state)
  --vm <name>           the VM (spec.vmName)
  --memory <size>       guest RAM, equal to QEMU's -m (default 1G; QEMU units K, M, G, T)
  --format lines|shell  one argument per line (default), or one shell-quoted line
  -h, --help            this help`;

const FORMATS = ['lines', 'shell'] as const;
const QEMU_SIZE = /^[1-9][0-9]{0,15}[KMGT]?$/;

/** The arguments for one VM (pure). */
export function qemuArgsFor(vm: GuestVm, memory: string): string[] {
  const args = [
    '-object', `memory-backend-memfd,id=vhba-mem,size=${memory},share=on`,
    '-machine', 'memory-backend=vhba-mem',
  ];
  for (const c of vm.controllers) {
    const id = `vhba-hba${c.index}`;
    // QEMU option syntax: a literal comma in a value is written twice.
    args.push('-chardev', `socket,id=${id},path=${c.socketPath.replaceAll(',', ',,')}`);
    args.push('-device', `vhost-user-scsi-pci,id=${id},chardev=${id},num_queues=${c.numQueues}`);
  }
  return args;
}

/** Quotes one word for a POSIX shell (only when needed). */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** Runs the subcommand; returns the exit code. */
export async function runQemuArgs(argv: string[], out: (text: string) => void = (t) => process.stdout.write(t), err: (text: string) => void = (t) => process.stderr.write(t)): Promise<number> {
  const flags = parseFlags('qemu-args', argv, {
    config: { type: 'string' },
    'socket-dir': { type: 'string' },
    'state-dir': { type: 'string' },
    vm: { type: 'string' },
    memory: { type: 'string', default: '1G' },
    format: { type: 'string', default: 'lines' },
    help: { type: 'boolean', short: 'h' },
  });
  if (flags.help === true) {
    out(`${QEMU_ARGS_USAGE}\n`);
    return 0;
  }
  const config = required('qemu-args', 'config', flags.config);
  const socketDir = required('qemu-args', 'socket-dir', flags['socket-dir']);
  const vmName = required('qemu-args', 'vm', flags.vm);
  const memory = flags.memory ?? '1G';
  if (!QEMU_SIZE.test(memory)) {
    throw new UsageError(`vhba qemu-args: --memory ${JSON.stringify(memory)} is not a size; allowed: a positive integer with an optional K, M, G or T suffix, equal to QEMU's -m`);
  }
  const format = oneOf('qemu-args', 'format', flags.format ?? 'lines', FORMATS);

  const loaded = await loadTopology(config, resolveDirs(socketDir, flags['state-dir']));
  if (!loaded.ok) {
    for (const e of loaded.errors) err(`${formatLoadError(e)}\n`);
    return EXIT_USAGE;
  }
  const vm = loaded.topology.vms.find((v) => v.vmName === vmName);
  if (vm === undefined) {
    const known = loaded.topology.vms.map((v) => v.vmName);
    err(`vhba qemu-args: no served VirtualDisk for VM ${JSON.stringify(vmName)}; VMs in the config: ${known.length === 0 ? '(none)' : known.join(', ')}\n`);
    return EXIT_USAGE;
  }
  const args = qemuArgsFor(vm, memory);
  out(format === 'lines' ? `${args.join('\n')}\n` : `${args.map(shellQuote).join(' ')}\n`);
  return 0;
}
