// `vhba`: the one binary. Dispatches to a subcommand; usage mistakes exit 2
// with a message that says what to change.
import { EXIT_USAGE, UsageError } from './args.ts';
import { QEMU_ARGS_USAGE, runQemuArgs } from './qemu-args.ts';
import { SERVE_USAGE, runServe } from './serve.ts';

/** Top-level help. */
export const USAGE = `Usage: vhba <command> [options]

A virtual SCSI host bus adapter (vhost-user-scsi) for virtual machines.

Commands:
  serve       serve VirtualDisk manifests to QEMU (standalone mode)
  qemu-args   print the QEMU arguments that connect a VM to its controllers
  csi         run the CSI plugin (controller, node or both)
  operator    reconcile VirtualDisks in a Kubernetes cluster
  engine      run the HBA engine with its control API
  ls          list a running engine's controllers and LUNs
  attach      hotplug a LUN into a running engine
  detach      hot-unplug a LUN
  resize      grow a LUN
  kubevirt-hook  KubeVirt hook: add vhba's devices to a libvirt domain
  help        show help for a command

Run 'vhba <command> --help' for a command's options.`;

// Heavier commands are imported when used, so one command's dependencies
// (gRPC for csi) never slow down or break another.
const COMMANDS: Record<string, { usage: () => Promise<string>; run: (argv: string[]) => Promise<number> }> = {
  serve: { usage: async () => SERVE_USAGE, run: (argv) => runServe(argv) },
  'qemu-args': { usage: async () => QEMU_ARGS_USAGE, run: (argv) => runQemuArgs(argv) },
  csi: { usage: async () => (await import('./csi.ts')).CSI_USAGE, run: async (argv) => (await import('./csi.ts')).runCsi(argv) },
  operator: { usage: async () => (await import('./operator.ts')).OPERATOR_USAGE, run: async (argv) => (await import('./operator.ts')).runOperator(argv) },
  engine: { usage: async () => (await import('./engine.ts')).ENGINE_USAGE, run: async (argv) => (await import('./engine.ts')).runEngine(argv) },
  ls: { usage: async () => (await import('./ls.ts')).LS_USAGE, run: async (argv) => (await import('./ls.ts')).runLs(argv) },
  attach: { usage: async () => (await import('./lun-verbs.ts')).ATTACH_USAGE, run: async (argv) => (await import('./lun-verbs.ts')).runAttach(argv) },
  detach: { usage: async () => (await import('./lun-verbs.ts')).DETACH_USAGE, run: async (argv) => (await import('./lun-verbs.ts')).runDetach(argv) },
  resize: { usage: async () => (await import('./lun-verbs.ts')).RESIZE_USAGE, run: async (argv) => (await import('./lun-verbs.ts')).runResize(argv) },
  'kubevirt-hook': { usage: async () => (await import('./kubevirt-hook.ts')).KUBEVIRT_HOOK_USAGE, run: async (argv) => (await import('./kubevirt-hook.ts')).runKubevirtHook(argv) },
};

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h') {
    (command === undefined ? process.stderr : process.stdout).write(`${USAGE}\n`);
    return command === undefined ? EXIT_USAGE : 0;
  }
  if (command === 'help') {
    const topic = rest[0];
    const entry = topic === undefined ? undefined : COMMANDS[topic];
    if (topic !== undefined && entry === undefined) {
      process.stderr.write(`vhba help: unknown command ${JSON.stringify(topic)}; commands: ${Object.keys(COMMANDS).join(', ')}\n`);
      return EXIT_USAGE;
    }
    process.stdout.write(`${entry === undefined ? USAGE : await entry.usage()}\n`);
    return 0;
  }
  const entry = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (entry === undefined) {
    process.stderr.write(`vhba: unknown command ${JSON.stringify(command)}; commands: ${Object.keys(COMMANDS).join(', ')}\nRun 'vhba --help' for usage.\n`);
    return EXIT_USAGE;
  }
  try {
    return await entry.run(rest);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`${error.message}\nRun 'vhba ${command} --help' for usage.\n`);
      return EXIT_USAGE;
    }
    // Set VHBA_DEBUG=1 for the stack trace.
    const detail = process.env.VHBA_DEBUG ? (error as Error).stack : (error as Error).message;
    process.stderr.write(`vhba ${command}: ${detail ?? String(error)}\n`);
    return 1;
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
