// `vhba ls`: what a running engine serves — controllers, their LUNs at
// C:T:L, identity, the /dev/disk/by-id names the guest's udev derives, and
// per-LUN and per-queue I/O counters. `--json` for scripts. A passthrough
// LUN (issue 8) shows its device (path or iscsi://portal/iqn/lun) and the
// identity and geometry the device reported at attach.
import { formatBytes } from '../operator/api/quantity.ts';
import { predictGuestPaths } from '../operator/guest-paths.ts';
import type { ControllerStatus, ListControllersResponse } from '../protos/gen/vhba/hba/v1/hba_pb.ts';
import { parseFlags } from './args.ts';
import { connectEngine, describeEngineError, engineAddress } from './engine-client.ts';
import { formatColumns } from './guest-table.ts';
import { describeBacking, observedLun } from './serve-reconcile.ts';
import { isPassthrough, type DeviceIdentity, type PassthroughPolicy } from '../hba/engine-api.ts';

/** Help text. */
export const LS_USAGE = `Usage: vhba ls [--engine unix:///path] [--controller <id>] [--json]

Lists the controllers and LUNs of a running engine (vhba engine or vhba serve).

Options:
  --engine <address>    control socket (default $VHBA_ENGINE or unix:///run/vhba/engine.sock)
  --controller <id>     only this controller
  --json                machine-readable output
  -h, --help            this help`;

/** One LUN as `vhba ls --json` prints it. */
export interface LsLun {
  address: string;
  target: number;
  lun: number;
  backing: string;
  sizeBytes: number;
  logicalBlockSize: number;
  physicalBlockSize: number;
  readOnly: boolean;
  serial: string;
  wwn: string;
  guestDevicePaths: string[];
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  /** Passthrough LUNs: the command policy and the device as probed at attach. */
  passthrough?: {
    kind: 'hostDevice' | 'iscsi';
    policy: PassthroughPolicy;
    device?: DeviceIdentity;
  };
}

/** One controller as `vhba ls --json` prints it. */
export interface LsController {
  id: string;
  socketPath: string;
  connected: boolean;
  numRequestQueues: number;
  requestQueues: { queue: number; commands: number; inFlight: number; availIndex: number }[];
  luns: LsLun[];
}

/** The controller number C of C:T:L: the N of an id ending in "hbaN", else 0. */
export function controllerIndex(id: string): number {
  const m = /hba([0-9]{1,3})$/.exec(id);
  return m ? Number(m[1]) : 0;
}

/** The ListControllers answer as plain data (pure). */
export function toLsView(res: ListControllersResponse): LsController[] {
  return res.controllers.map((c: ControllerStatus) => {
    const index = controllerIndex(c.id);
    return {
      id: c.id,
      socketPath: c.socketPath,
      connected: c.connected,
      numRequestQueues: c.numRequestQueues,
      requestQueues: c.requestQueues.map((q) => ({ queue: q.queue, commands: Number(q.commands), inFlight: q.inFlight, availIndex: q.availIndex })),
      luns: c.luns.map((l): LsLun => {
        const observed = observedLun(l);
        if (isPassthrough(observed.backing)) {
          const device = observed.device;
          const wwn = device?.wwn ?? '';
          return {
            address: `${index}:${observed.target}:${observed.lun}`,
            target: observed.target,
            lun: observed.lun,
            backing: describeBacking(observed.backing),
            sizeBytes: device?.sizeBytes ?? 0,
            logicalBlockSize: device?.logicalBlockSize ?? 0,
            physicalBlockSize: device?.physicalBlockSize ?? 0,
            readOnly: false,
            serial: device?.serial ?? '',
            wwn,
            guestDevicePaths: predictGuestPaths({ serial: device?.serial ?? '', wwn }),
            reads: Number(l.reads),
            writes: Number(l.writes),
            bytesRead: Number(l.bytesRead),
            bytesWritten: Number(l.bytesWritten),
            passthrough: { kind: observed.backing.kind, policy: observed.backing.policy, ...(device === undefined ? {} : { device }) },
          };
        }
        const target = l.address?.target ?? 0;
        const lun = l.address?.lun ?? 0;
        const p = l.parameters;
        const wwn = p?.wwn ?? '';
        return {
          address: `${index}:${target}:${lun}`,
          target,
          lun,
          backing: l.backingPath === '' ? '(memory)' : l.backingPath,
          sizeBytes: Number(p?.sizeBytes ?? 0n),
          logicalBlockSize: p?.logicalBlockSize ?? 0,
          physicalBlockSize: p?.physicalBlockSize ?? 0,
          readOnly: p?.readOnly ?? false,
          serial: p?.serial ?? '',
          wwn,
          guestDevicePaths: wwn === '' ? [] : predictGuestPaths({ serial: p?.serial ?? '', wwn }),
          reads: Number(l.reads),
          writes: Number(l.writes),
          bytesRead: Number(l.bytesRead),
          bytesWritten: Number(l.bytesWritten),
        };
      }),
    };
  });
}

/** The table `vhba ls` prints (pure). */
export function formatLs(controllers: readonly LsController[]): string {
  if (controllers.length === 0) return 'no controllers\n';
  const out: string[] = [];
  for (const c of controllers) {
    const queues = c.requestQueues.length === 0 ? '' : `; request queues (avail index / TypeScript-path commands) ${c.requestQueues.map((q) => `q${q.queue - 2}=${q.availIndex}/${q.commands}`).join(' ')}`;
    out.push(`${c.id}  ${c.socketPath}  ${c.connected ? 'connected' : 'not connected'}  ${c.numRequestQueues} request queue(s)${queues}`);
    if (c.luns.length === 0) {
      out.push('  (no LUNs)');
      continue;
    }
    const rows = [['  C:T:L', 'SIZE', 'BLOCKS', 'RO', 'SERIAL', 'WWN', 'READS', 'WRITES', 'READ', 'WRITTEN', 'BACKING', 'GUEST PATHS']];
    for (const l of c.luns) {
      const pt = l.passthrough;
      const known = pt === undefined || pt.device !== undefined;
      rows.push([
        `  ${l.address}`, known ? formatBytes(l.sizeBytes) : '?', known ? `${l.logicalBlockSize}/${l.physicalBlockSize}` : '?',
        pt === undefined ? (l.readOnly ? 'yes' : 'no') : `dev${pt.policy.rawio ? ' rawio' : ''}`,
        l.serial === '' ? '-' : l.serial, l.wwn === '' ? '-' : `0x${l.wwn}`,
        String(l.reads), String(l.writes), formatBytes(l.bytesRead), formatBytes(l.bytesWritten), l.backing, l.guestDevicePaths.join(' '),
      ]);
    }
    out.push(formatColumns(rows));
  }
  return `${out.join('\n')}\n`;
}

/** Runs the subcommand; returns the exit code. */
export async function runLs(argv: string[], out: (t: string) => void = (t) => process.stdout.write(t), err: (t: string) => void = (t) => process.stderr.write(t)): Promise<number> {
  const flags = parseFlags('ls', argv, {
    engine: { type: 'string' },
    controller: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (flags.help === true) {
    out(`${LS_USAGE}\n`);
    return 0;
  }
  const address = engineAddress('ls', flags.engine);
  const client = connectEngine(address);
  try {
    const res = await client.listControllers({ id: flags.controller ?? '' }, { deadlineMs: 10_000 });
    const view = toLsView(res);
    if (flags.controller !== undefined && view.length === 0) {
      err(`vhba ls: no controller ${JSON.stringify(flags.controller)} at ${address}\n`);
      return 1;
    }
    out(flags.json === true ? `${JSON.stringify({ controllers: view }, null, 2)}\n` : formatLs(view));
    return 0;
  } catch (error) {
    err(`vhba ls: ${describeEngineError(error, address)}\n`);
    return 1;
  } finally {
    client.close();
  }
}
