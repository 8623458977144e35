// `vhba attach|detach|resize`: one-off changes to a running engine (vhba
// engine). Each is one idempotent control-API call: attaching what is already
// there with the same parameters, or detaching what is absent, succeeds.
// A controller managed by `vhba serve` follows its manifest directory, which
// undoes one-off changes at its next resync: edit the manifests there instead.
// `vhba attach` also passes a real SCSI LUN through (issue 8): a host device
// (--host-device) or an iSCSI LUN (--iscsi-*), with its command policy; it
// prints the identity the device reported.
import { isAbsolute, resolve } from 'node:path';
import { parseByteQuantity } from '../operator/api/quantity.ts';
import { DEFAULTS, LIMITS, PATTERNS } from '../operator/api/virtualdisk.ts';
import type { DeviceIdentity as DeviceIdentityMessage } from '../protos/gen/vhba/hba/v1/hba_pb.ts';
import { attachRequest, describeBacking } from './serve-reconcile.ts';
import type { LunSpec, PassthroughPolicy } from '../hba/engine-api.ts';
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
       vhba attach --controller <id> --target <t> --lun <l> --host-device <path> [passthrough options]
       vhba attach --controller <id> --target <t> --lun <l> --iscsi-portal <host[:port]> --iscsi-iqn <iqn> --iscsi-lun <n> [--initiator-name <iqn>] [passthrough options]

Attaches (hotplugs) a LUN; a connected guest sees it appear. An emulated disk
(--file, --memory) gets the identity and geometry given here; a passthrough
LUN (--host-device, --iscsi-*) is a whole real SCSI LUN whose identity,
capacity and block size the guest sees as the device reports them.

Options:
${ADDRESS_HELP}
  --create-socket <path>  create the controller first with this vhost-user socket if it does not exist
  -h, --help            this help

Emulated disk:
  --file <path>         backing file (created sparse, or grown, to --size)
  --memory              an in-memory disk instead (lost on detach)
  --size <quantity>     capacity, e.g. 1Gi
  --serial <text>       unit serial (default derived from controller and address)
  --wwn <hex>           NAA WWN, 16 or 32 hex digits (default derived likewise)
  --logical-block-size <512|4096>   default 512
  --physical-block-size <bytes>     default 4096
  --read-only           refuse writes

Passthrough LUN:
  --host-device <path>  a host SCSI device: its /dev/disk/by-id/ link (stable), /dev/sdX or /dev/sgN
  --iscsi-portal <host[:port]>  iSCSI portal (port default ${DEFAULTS.iscsiPort}), reached by the engine itself
  --iscsi-iqn <iqn>     iSCSI target name (iqn.…, eui.… or naa.…)
  --iscsi-lun <0-${LIMITS.maxIscsiLun}>  LUN at that target
  --initiator-name <iqn>  initiator name to log in with (default: the engine's)
  --rawio               let through commands refused by default (WRITE BUFFER, ATA PASS-THROUGH,
                        SECURITY PROTOCOL OUT, MAINTENANCE OUT, vendor-specific)
  --timeout-ms <n>      per-command timeout (default 30000)
  --expect-wwn <hex>    refuse the device unless its VPD 83h NAA designator is this
  --expect-serial <text>  refuse the device unless its VPD 80h serial is this`;

/** Longest per-command timeout `--timeout-ms` takes: one hour (as the control API). */
const MAX_TIMEOUT_MS = 3_600_000;
const portalPattern = new RegExp(PATTERNS.iscsiPortal);
const iscsiNamePattern = new RegExp(PATTERNS.iscsiName);
const wwnPattern = new RegExp(PATTERNS.wwn);

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

const EMULATED_ONLY = ['size', 'serial', 'wwn', 'logical-block-size', 'physical-block-size', 'read-only'] as const;
const PASSTHROUGH_ONLY = ['rawio', 'timeout-ms', 'expect-wwn', 'expect-serial'] as const;
const ISCSI_FLAGS = ['iscsi-portal', 'iscsi-iqn', 'iscsi-lun', 'initiator-name'] as const;

/** The policy flags of a passthrough attach. */
function policyFlags(flags: Record<string, string | boolean | undefined>): PassthroughPolicy {
  const policy: PassthroughPolicy = { rawio: flags.rawio === true };
  const timeout = flags['timeout-ms'];
  if (typeof timeout === 'string') {
    if (!/^[0-9]{1,7}$/.test(timeout) || Number(timeout) < 1 || Number(timeout) > MAX_TIMEOUT_MS) {
      throw new UsageError(`vhba attach: --timeout-ms ${JSON.stringify(timeout)} is not allowed; allowed: milliseconds from 1 to ${MAX_TIMEOUT_MS}`);
    }
    policy.timeoutMs = Number(timeout);
  }
  const wwn = flags['expect-wwn'];
  if (typeof wwn === 'string') {
    if (!wwnPattern.test(wwn)) throw new UsageError(`vhba attach: --expect-wwn ${JSON.stringify(wwn)} is not a NAA WWN; allowed: optional 0x, then 16 hex digits starting with 2, 3 or 5, or 32 starting with 6`);
    policy.expectedWwn = wwn.replace(/^0[xX]/, '').toLowerCase();
  }
  const serial = flags['expect-serial'];
  if (typeof serial === 'string') {
    if (serial.length === 0 || serial.length > 255 || !/^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/.test(serial)) {
      throw new UsageError(`vhba attach: --expect-serial ${JSON.stringify(serial)} is not allowed; allowed: 1–255 printable ASCII characters without leading or trailing space`);
    }
    policy.expectedSerial = serial;
  }
  return policy;
}

/** The backing of a passthrough attach (--host-device or --iscsi-*), checked. */
function passthroughBacking(flags: Record<string, string | boolean | undefined>): LunSpec['backing'] {
  const policy = policyFlags(flags);
  const device = flags['host-device'];
  if (typeof device === 'string') {
    for (const name of ISCSI_FLAGS) if (flags[name] !== undefined) throw new UsageError(`vhba attach: --${name} is for an iSCSI LUN; give either --host-device or --iscsi-portal/--iscsi-iqn/--iscsi-lun`);
    if (device === '') throw new UsageError('vhba attach: --host-device needs a path, e.g. /dev/disk/by-id/wwn-0x…');
    return { kind: 'hostDevice', path: isAbsolute(device) ? device : resolve(device), policy };
  }
  const portal = required('attach', 'iscsi-portal', flags['iscsi-portal'] as string | undefined);
  if (portal.length > LIMITS.portalMaxLength || !portalPattern.test(portal)) {
    throw new UsageError(`vhba attach: --iscsi-portal ${JSON.stringify(portal)} is not allowed; allowed: host:port (port 1–65535) or host (port ${DEFAULTS.iscsiPort}), the host a DNS name, an IPv4 address or a bracketed IPv6 address`);
  }
  const hasPort = portal.startsWith('[') ? portal.includes(']:') : portal.includes(':');
  const name = (flag: string, value: string | undefined): string => {
    const v = required('attach', flag, value);
    if (v.length > LIMITS.iscsiNameMaxLength || !iscsiNamePattern.test(v)) {
      throw new UsageError(`vhba attach: --${flag} ${JSON.stringify(v)} is not an iSCSI name; allowed: iqn.YYYY-MM.<reversed domain>[:<name>], eui.<16 hex digits> or naa.<16 or 32 hex digits>`);
    }
    return v;
  };
  const iqn = name('iscsi-iqn', flags['iscsi-iqn'] as string | undefined);
  const lun = intFlag('attach', 'iscsi-lun', flags['iscsi-lun'] as string | undefined, LIMITS.maxIscsiLun);
  const initiator = flags['initiator-name'] === undefined ? undefined : name('initiator-name', flags['initiator-name'] as string);
  return { kind: 'iscsi', portal: hasPort ? portal : `${portal}:${DEFAULTS.iscsiPort}`, iqn, lun, ...(initiator === undefined ? {} : { initiatorName: initiator }), policy };
}

/** One line about the device a passthrough attach found. */
export function describeDevice(d: DeviceIdentityMessage): string {
  const wwn = d.wwn.toLowerCase();
  const paths = predictGuestPaths({ serial: d.serial, wwn });
  return `${d.vendor.trim()} ${d.product.trim()} ${d.revision.trim()}, serial ${d.serial === '' ? '(none)' : d.serial}, wwn ${wwn === '' ? '(none: no NAA designator)' : `0x${wwn}`}, `
    + `${d.sizeBytes} bytes, ${d.logicalBlockSize}/${d.physicalBlockSize}-byte blocks; guest paths ${paths.length > 0 ? paths.join(' ') : 'from the device\'s other designators (see the guest\'s /dev/disk/by-id)'}`;
}

/** `vhba attach`; returns the exit code. */
export async function runAttach(argv: string[], out: Out = (t) => process.stdout.write(t), err: Out = (t) => process.stderr.write(t)): Promise<number> {
  const flags = parseFlags('attach', argv, {
    ...addressFlags,
    file: { type: 'string' },
    memory: { type: 'boolean' },
    size: { type: 'string' },
    serial: { type: 'string' },
    wwn: { type: 'string' },
    'logical-block-size': { type: 'string' },
    'physical-block-size': { type: 'string' },
    'read-only': { type: 'boolean' },
    'create-socket': { type: 'string' },
    'host-device': { type: 'string' },
    'iscsi-portal': { type: 'string' },
    'iscsi-iqn': { type: 'string' },
    'iscsi-lun': { type: 'string' },
    'initiator-name': { type: 'string' },
    rawio: { type: 'boolean' },
    'timeout-ms': { type: 'string' },
    'expect-wwn': { type: 'string' },
    'expect-serial': { type: 'string' },
  });
  if (flags.help === true) {
    out(`${ATTACH_USAGE}\n`);
    return 0;
  }
  const controllerId = required('attach', 'controller', flags.controller);
  const target = intFlag('attach', 'target', flags.target, 255);
  const lun = intFlag('attach', 'lun', flags.lun, 16383);
  const kinds = [flags.file !== undefined, flags.memory === true, flags['host-device'] !== undefined, ISCSI_FLAGS.some((n) => flags[n] !== undefined)].filter(Boolean).length;
  if (kinds !== 1) throw new UsageError('vhba attach: give exactly one of --file <path>, --memory, --host-device <path> or --iscsi-portal/--iscsi-iqn/--iscsi-lun');
  const passthrough = flags['host-device'] !== undefined || flags['iscsi-portal'] !== undefined || flags['iscsi-iqn'] !== undefined || flags['iscsi-lun'] !== undefined || flags['initiator-name'] !== undefined;
  const given = (names: readonly string[]) => names.filter((n) => (flags as Record<string, unknown>)[n] !== undefined);
  let spec: LunSpec;
  if (passthrough) {
    const wrong = given(EMULATED_ONLY);
    if (wrong.length > 0) throw new UsageError(`vhba attach: ${wrong.map((n) => `--${n}`).join(', ')} ${wrong.length === 1 ? 'is' : 'are'} the device's own for a passthrough LUN (the guest sees what the device reports); leave ${wrong.length === 1 ? 'it' : 'them'} out, or use --expect-wwn/--expect-serial to check the identity`);
    spec = { target, lun, backing: passthroughBacking(flags) };
  } else {
    const wrong = given(PASSTHROUGH_ONLY);
    if (wrong.length > 0) throw new UsageError(`vhba attach: ${wrong.map((n) => `--${n}`).join(', ')} ${wrong.length === 1 ? 'applies' : 'apply'} to a passthrough LUN (--host-device or --iscsi-*) only`);
    const sizeBytes = sizeFlag('attach', flags.size);
    const logicalText = flags['logical-block-size'] ?? '512';
    const logical = Number(logicalText);
    if (logical !== 512 && logical !== 4096) throw new UsageError(`vhba attach: --logical-block-size ${logicalText} is not allowed; allowed: 512, 4096`);
    const physical = Number(flags['physical-block-size'] ?? '4096');
    const seed = `${controllerId}/${target}:${lun}`;
    const serial = flags.serial ?? deriveSerial(seed);
    const wwn = (flags.wwn ?? deriveWwn(seed)).replace(/^0[xX]/, '').toLowerCase();
    const file = flags.file;
    spec = {
      target, lun,
      backing: file !== undefined ? { kind: 'file', path: isAbsolute(file) ? file : resolve(file), sizeBytes } : { kind: 'memory', sizeBytes },
      params: { logicalBlockSize: logical, physicalBlockSize: physical, serial, wwn, readOnly: flags['read-only'] === true },
    };
  }
  const address = engineAddress('attach', flags.engine);
  const createSocket = flags['create-socket'];
  return call('attach', address, err, async (client) => {
    if (createSocket !== undefined) await client.createController({ id: controllerId, socketPath: resolve(createSocket) });
    const answer = await client.attachLun(attachRequest(controllerId, spec));
    const where = `attached ${controllerId} target ${target} lun ${lun}`;
    if (spec.params !== undefined) {
      const { serial, wwn } = spec.params;
      out(`${where}: serial ${serial}, wwn 0x${wwn}; guest paths ${predictGuestPaths({ serial, wwn }).join(' ')}\n`);
    } else if (answer.device !== undefined) {
      out(`${where}: ${describeBacking(spec.backing)}: ${describeDevice(answer.device)}\n`);
    } else {
      out(`${where}: ${describeBacking(spec.backing)} (the engine reported no device identity)\n`);
    }
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
