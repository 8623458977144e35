// `vhba attach|detach|resize`: one-off changes to a running engine (vhba
// engine). Each is one idempotent control-API call: attaching what is already
// there with the same parameters, or detaching what is absent, succeeds.
// A controller managed by `vhba serve` follows its manifest directory, which
// undoes one-off changes at its next resync: edit the manifests there instead.
import { isAbsolute, resolve } from 'node:path';
import { parseByteQuantity } from '../operator/api/quantity.ts';
import { predictGuestPaths } from '../operator/guest-paths.ts';
import { deriveSerial, deriveWwn } from '../operator/identity.ts';
import { parseFlags, required, UsageError } from './args.ts';
import { connectEngine, describeEngineError, engineAddress, intFlag, type EngineClient } from './engine-client.ts';

const ADDRESS_HELP = `  --engine <address>    control socket (default $VHBA_ENGINE or unix:///run/vhba/engine.sock)
  --controller <id>     engine controller id, e.g. vm1/hba0
  --target <0-255>      target number
  --lun <0-16383>       LUN number`;

/** Help text of `vhba attach`. */
export const ATTACH_USAGE = `Usage: vhba attach --controller <id> --target <t> --lun <l> (--file <path> | --memory) --size <quantity> [options]

Attaches (hotplugs) a LUN; a connected guest sees it appear.

Options:
${ADDRESS_HELP}
  --file <path>         backing file (created sparse, or grown, to --size)
  --memory              an in-memory disk instead (lost on detach)
  --size <quantity>     capacity, e.g. 1Gi
  --serial <text>       unit serial (default derived from controller and address)
  --wwn <hex>           NAA WWN, 16 or 32 hex digits (default derived likewise)
  --logical-block-size <512|4096>   default 512
  --physical-block-size <bytes>     default 4096
  --read-only           refuse writes
  --create-socket <path>  create the controller first with this vhost-user socket if it does not exist
  -h, --help            this help`;

/** Help text of `vhba detach`. */
export const DETACH_USAGE = `Usage: vhba detach --controller <id> --target <t> --lun <l> [--engine <address>]

Detaches (hot-unplugs) a LUN; a connected guest sees it go. Commands already
running finish; the backing closes after the last one. Absent → success.

Options:
${ADDRESS_HELP}
  -h, --help            this help`;

/** Help text of `vhba resize`. */
export const RESIZE_USAGE = `Usage: vhba resize --controller <id> --target <t> --lun <l> --size <quantity> [--engine <address>]

Grows a LUN; a connected guest gets CAPACITY DATA HAS CHANGED and rereads
the capacity. Shrinking is refused.

Options:
${ADDRESS_HELP}
  --size <quantity>     the new capacity, e.g. 2Gi
  -h, --help            this help`;

type Out = (t: string) => void;

function sizeFlag(command: string, value: string | undefined): number {
  const parsed = parseByteQuantity(required(command, 'size', value));
  if (!parsed.ok) throw new UsageError(`vhba ${command}: --size: ${parsed.reason}`);
  if (parsed.bytes === 0) throw new UsageError(`vhba ${command}: --size must be greater than 0`);
  return parsed.bytes;
}

async function call(command: string, address: string, err: Out, body: (client: EngineClient) => Promise<void>): Promise<number> {
  const client = connectEngine(address);
  try {
    await body(client);
    return 0;
  } catch (error) {
    if (error instanceof UsageError) throw error;
    err(`vhba ${command}: ${describeEngineError(error, address)}\n`);
    return 1;
  } finally {
    client.close();
  }
}

const addressFlags = {
  engine: { type: 'string' },
  controller: { type: 'string' },
  target: { type: 'string' },
  lun: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** `vhba attach`; returns the exit code. */
export async function runAttach(argv: string[], out: Out = (t) => process.stdout.write(t), err: Out = (t) => process.stderr.write(t)): Promise<number> {
  const flags = parseFlags('attach', argv, {
    ...addressFlags,
    file: { type: 'string' },
    memory: { type: 'boolean' },
    size: { type: 'string' },
    serial: { type: 'string' },
    wwn: { type: 'string' },
    'logical-block-size': { type: 'string', default: '512' },
    'physical-block-size': { type: 'string', default: '4096' },
    'read-only': { type: 'boolean' },
    'create-socket': { type: 'string' },
  });
  if (flags.help === true) {
    out(`${ATTACH_USAGE}\n`);
    return 0;
  }
  const controllerId = required('attach', 'controller', flags.controller);
  const target = intFlag('attach', 'target', flags.target, 255);
  const lun = intFlag('attach', 'lun', flags.lun, 16383);
  if ((flags.file === undefined) === (flags.memory !== true)) throw new UsageError('vhba attach: give exactly one of --file <path> or --memory');
  const sizeBytes = sizeFlag('attach', flags.size);
  const logical = Number(flags['logical-block-size']);
  if (logical !== 512 && logical !== 4096) throw new UsageError(`vhba attach: --logical-block-size ${flags['logical-block-size']} is not allowed; allowed: 512, 4096`);
  const physical = Number(flags['physical-block-size']);
  const seed = `${controllerId}/${target}:${lun}`;
  const serial = flags.serial ?? deriveSerial(seed);
  const wwn = (flags.wwn ?? deriveWwn(seed)).replace(/^0[xX]/, '').toLowerCase();
  const address = engineAddress('attach', flags.engine);
  const createSocket = flags['create-socket'];
  return call('attach', address, err, async (client) => {
    if (createSocket !== undefined) await client.createController({ id: controllerId, socketPath: resolve(createSocket) });
    const file = flags.file;
    await client.attachLun({
      controllerId,
      address: { target, lun },
      backing: file !== undefined ? { case: 'file', value: { path: isAbsolute(file) ? file : resolve(file) } } : { case: 'memory', value: {} },
      parameters: { sizeBytes: BigInt(sizeBytes), logicalBlockSize: logical, physicalBlockSize: physical, serial, wwn, readOnly: flags['read-only'] === true, product: '' },
    });
    out(`attached ${controllerId} target ${target} lun ${lun}: serial ${serial}, wwn 0x${wwn}; guest paths ${predictGuestPaths({ serial, wwn }).join(' ')}\n`);
  });
}

/** `vhba detach`; returns the exit code. */
export async function runDetach(argv: string[], out: Out = (t) => process.stdout.write(t), err: Out = (t) => process.stderr.write(t)): Promise<number> {
  const flags = parseFlags('detach', argv, addressFlags);
  if (flags.help === true) {
    out(`${DETACH_USAGE}\n`);
    return 0;
  }
  const controllerId = required('detach', 'controller', flags.controller);
  const target = intFlag('detach', 'target', flags.target, 255);
  const lun = intFlag('detach', 'lun', flags.lun, 16383);
  const address = engineAddress('detach', flags.engine);
  return call('detach', address, err, async (client) => {
    await client.detachLun({ controllerId, address: { target, lun } });
    out(`detached ${controllerId} target ${target} lun ${lun}\n`);
  });
}

/** `vhba resize`; returns the exit code. */
export async function runResize(argv: string[], out: Out = (t) => process.stdout.write(t), err: Out = (t) => process.stderr.write(t)): Promise<number> {
  const flags = parseFlags('resize', argv, { ...addressFlags, size: { type: 'string' } });
  if (flags.help === true) {
    out(`${RESIZE_USAGE}\n`);
    return 0;
  }
  const controllerId = required('resize', 'controller', flags.controller);
  const target = intFlag('resize', 'target', flags.target, 255);
  const lun = intFlag('resize', 'lun', flags.lun, 16383);
  const sizeBytes = sizeFlag('resize', flags.size);
  const address = engineAddress('resize', flags.engine);
  return call('resize', address, err, async (client) => {
    await client.resizeLun({ controllerId, address: { target, lun }, sizeBytes: BigInt(sizeBytes) });
    out(`resized ${controllerId} target ${target} lun ${lun} to ${sizeBytes} bytes\n`);
  });
}
