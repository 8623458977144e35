// `vhba kubevirt-hook`: KubeVirt glue. libvirt has no vhost-user-scsi disk
// type, so a KubeVirt hook sidecar (annotation hooks.kubevirt.io/hookSidecars)
// rewrites the libvirt domain XML before virt-launcher defines it:
//  - <memoryBacking><source type='memfd'/><access mode='shared'/>: guest RAM
//    shareable with the engine (vhost-user.rst "Memory regions": the backend
//    mmaps the fds QEMU sends). This replaces the -object memory-backend-memfd
//    / -machine memory-backend pair `vhba qemu-args` prints, which libvirt
//    would conflict with since it owns the memory backend.
//  - <qemu:commandline> with the -chardev/-device pairs `vhba qemu-args`
//    prints (qemuArgsFor, the same producer), one vhost-user-scsi-pci per HBA.
//  - the placeholder <disk> KubeVirt made for each vhba volume removed (the
//    volume is a directory of sockets, not a disk image).
// The command line matches KubeVirt's sidecar-shim calling convention for
// hook versions v1alpha1/v1alpha2: `onDefineDomain --vmi <json> --domain <xml>`,
// the new domain XML on stdout.
//
// Which HBAs a VM has comes from the VMI annotation vhba.io/controllers, a
// JSON list [{"volume": "<volume name>", "hba": <index>, "queues": <n>}]; the
// socket is <volumes-dir>/<volume>/hba<index>.sock, where kubelet mounted the
// volume into the compute container (the CSI node plugin publishes the VM's
// socket directory there, for every vhba volume of the VM). An entry without
// "hba" names a vhba volume whose placeholder disk is only removed.
import { parseFlags, required, UsageError } from './args.ts';
import { qemuArgsFor } from './qemu-args.ts';
import type { GuestVm } from './topology.ts';

/** Help text. */
export const KUBEVIRT_HOOK_USAGE = `Usage: vhba kubevirt-hook onDefineDomain --vmi <json> --domain <xml> [--volumes-dir <dir>]

KubeVirt hook (sidecar-shim convention): prints the domain XML with shared
memfd memory and the vhost-user-scsi-pci devices of the VMI's vhba HBAs.

Options:
  --vmi <json>          the VirtualMachineInstance (JSON)
  --domain <xml>        the libvirt domain XML virt-launcher built
  --volumes-dir <dir>   where PVC volumes appear in the compute container
                        (default /var/run/kubevirt-private/vmi-disks)
  -h, --help            this help`;

/** The VMI annotation naming the vhba HBAs. */
export const CONTROLLERS_ANNOTATION = 'vhba.io/controllers';
/** libvirt's QEMU namespace (formatdomain: "QEMU command-line passthrough"). */
export const QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';
/** Where virt-launcher mounts PVC volumes (one directory per volume name). */
export const DEFAULT_VOLUMES_DIR = '/var/run/kubevirt-private/vmi-disks';

/** One entry of the VMI annotation: an HBA reached through `volume`, or (hba undefined) just a vhba volume. */
export interface HookController {
  volume: string;
  hba?: number;
  queues: number;
}

const VOLUME_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/; // DNS-1123 label, as KubeVirt volume names
const MAX_HBAS = 16;

/** Parses and validates the vhba.io/controllers annotation value. */
export function parseControllersAnnotation(value: string): HookController[] {
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch (error) {
    throw new Error(`${CONTROLLERS_ANNOTATION}: not JSON: ${(error as Error).message}`, { cause: error });
  }
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_HBAS) {
    throw new Error(`${CONTROLLERS_ANNOTATION}: want a list of 1..${MAX_HBAS} {volume, hba, queues}`);
  }
  const seen = new Set<number>();
  return raw.map((item: unknown, i) => {
    const o = item as Record<string, unknown>;
    const where = `${CONTROLLERS_ANNOTATION}[${i}]`;
    if (typeof o !== 'object' || o === null) throw new Error(`${where}: not an object`);
    const { volume, hba, queues = 1 } = o;
    if (typeof volume !== 'string' || !VOLUME_NAME.test(volume)) throw new Error(`${where}.volume: want a volume name (DNS-1123 label)`);
    if (typeof queues !== 'number' || !Number.isInteger(queues) || queues < 1 || queues > 64) throw new Error(`${where}.queues: want an integer 1..64`);
    if (hba === undefined) return { volume, queues };
    if (typeof hba !== 'number' || !Number.isInteger(hba) || hba < 0 || hba >= MAX_HBAS) throw new Error(`${where}.hba: want an integer 0..${MAX_HBAS - 1}`);
    if (seen.has(hba)) throw new Error(`${where}.hba: ${hba} given twice`);
    seen.add(hba);
    return { volume, hba, queues };
  });
}

/** The controllers named in a VMI (JSON object), or [] if it has no annotation. */
export function controllersFromVmi(vmi: unknown): HookController[] {
  const annotations = (vmi as { metadata?: { annotations?: Record<string, unknown> } })?.metadata?.annotations;
  const value = annotations?.[CONTROLLERS_ANNOTATION];
  if (value === undefined) return [];
  if (typeof value !== 'string') throw new Error(`${CONTROLLERS_ANNOTATION}: not a string`);
  return parseControllersAnnotation(value);
}

/** Escapes text for an XML attribute value in single or double quotes. */
export function xmlAttr(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;').replaceAll("'", '&apos;');
}

/** The QEMU arguments for the HBAs (the memfd pair dropped: libvirt's memoryBacking replaces it). */
export function hookQemuArgs(controllers: readonly HookController[], volumesDir: string): string[] {
  const vm: GuestVm = {
    vmName: 'kubevirt',
    disks: [],
    controllers: controllers.flatMap((c) => (c.hba === undefined ? [] : [{ ...c, hba: c.hba }])).map((c) => ({
      index: c.hba,
      id: `${c.volume}/hba${c.hba}`,
      socketPath: `${volumesDir.replace(/\/+$/, '')}/${c.volume}/hba${c.hba}.sock`,
      numQueues: c.queues,
    })),
  };
  const args = qemuArgsFor(vm, '1G');
  // qemuArgsFor starts with: -object memory-backend-memfd,... -machine memory-backend=...
  if (args[0] !== '-object' || !args[1]?.startsWith('memory-backend-memfd,') || args[2] !== '-machine') {
    throw new Error('qemuArgsFor changed shape: expected the memfd backend first');
  }
  return args.slice(4);
}

/** Index just past the element that starts at `start` (an open tag `<name`), or -1. */
function elementEnd(xml: string, start: number, name: string): number {
  const openEnd = xml.indexOf('>', start);
  if (openEnd < 0) return -1;
  if (xml[openEnd - 1] === '/') return openEnd + 1;
  const close = xml.indexOf(`</${name}>`, openEnd);
  return close < 0 ? -1 : close + name.length + 3;
}

/** Finds the first element `<name ...>` (or self-closed) in xml[from, to); returns [start, end] or undefined. */
function findElement(xml: string, name: string, from = 0, to = xml.length): [number, number] | undefined {
  const re = new RegExp(`<${name.replace(':', '\\:')}(?=[\\s/>])`, 'g');
  re.lastIndex = from;
  const m = re.exec(xml);
  if (m === null || m.index >= to) return undefined;
  const end = elementEnd(xml, m.index, name);
  if (end < 0 || end > to) throw new Error(`domain XML: <${name}> is not closed`);
  return [m.index, end];
}

/**
 * Rewrites a libvirt domain XML for vhba (pure). Leaves it unchanged when
 * `controllers` is empty. Throws on XML it cannot place the changes in.
 */
export function transformDomainXml(domainXml: string, controllers: readonly HookController[], volumesDir = DEFAULT_VOLUMES_DIR): string {
  if (controllers.length === 0) return domainXml;
  if (!controllers.some((c) => c.hba !== undefined)) throw new Error(`${CONTROLLERS_ANNOTATION}: no entry names an hba`);
  let xml = domainXml;
  const root = /<domain(?=[\s>])[^>]*>/.exec(xml);
  if (root === null) throw new Error('domain XML: no <domain> element');
  const rootEnd = xml.lastIndexOf('</domain>');
  if (rootEnd < root.index) throw new Error('domain XML: <domain> is not closed');

  // 1. Drop the placeholder disks whose source file lies in a vhba volume.
  const volumes = new Set(controllers.map((c) => c.volume));
  const prefix = volumesDir.replace(/\/+$/, '');
  for (let at = 0, guard = 0; guard < 10_000; guard++) {
    const disk = findElement(xml, 'disk', at);
    if (disk === undefined) break;
    const body = xml.slice(disk[0], disk[1]);
    const file = /<source\s[^>]*file=(["'])([^"']*)\1/.exec(body)?.[2];
    const volume = file?.startsWith(`${prefix}/`) ? file.slice(prefix.length + 1).split('/')[0] : undefined;
    if (volume !== undefined && volumes.has(volume)) {
      // Remove with the line's leading indentation, if any.
      let start = disk[0];
      while (start > 0 && (xml[start - 1] === ' ' || xml[start - 1] === '\t')) start--;
      let end = disk[1];
      if (xml[end] === '\n') end++;
      xml = xml.slice(0, start) + xml.slice(end);
      at = start;
    } else {
      at = disk[1];
    }
  }

  // 2. Shared memfd memory.
  const memfd = "<source type='memfd'/><access mode='shared'/>";
  const backing = findElement(xml, 'memoryBacking');
  if (backing === undefined) {
    const at = xml.lastIndexOf('</domain>');
    xml = `${xml.slice(0, at)}  <memoryBacking>${memfd}</memoryBacking>\n${xml.slice(at)}`;
  } else {
    let inner = xml.slice(backing[0], backing[1]);
    if (inner.endsWith('/>')) inner = `${inner.slice(0, -2).trimEnd()}></memoryBacking>`;
    const innerStart = inner.indexOf('>') + 1;
    let body = inner.slice(innerStart, inner.length - '</memoryBacking>'.length);
    // Any other source/access choice is replaced: vhost-user needs shared fds.
    body = body.replace(/<source(?=[\s/>])[^>]*\/>|<source(?=[\s>])[^>]*>[\s\S]*?<\/source>/g, '');
    body = body.replace(/<access(?=[\s/>])[^>]*\/>|<access(?=[\s>])[^>]*>[\s\S]*?<\/access>/g, '');
    xml = `${xml.slice(0, backing[0])}${inner.slice(0, innerStart)}${body}${memfd}</memoryBacking>${xml.slice(backing[1])}`;
  }

  // 3. The QEMU namespace on <domain> and the arguments in <qemu:commandline>.
  const nsMatch = /\sxmlns:([A-Za-z_][\w.-]*)=(["'])http:\/\/libvirt\.org\/schemas\/domain\/qemu\/1\.0\2/.exec(root[0]);
  const ns = nsMatch?.[1] ?? 'qemu';
  if (nsMatch === undefined || nsMatch === null) {
    if (/\sxmlns:qemu=/.test(root[0])) throw new Error('domain XML: prefix qemu is bound to another namespace');
    const openTagEnd = root.index + root[0].length - 1;
    xml = `${xml.slice(0, openTagEnd)} xmlns:qemu='${QEMU_NS}'${xml.slice(openTagEnd)}`;
  }
  const args = hookQemuArgs(controllers, volumesDir).map((a) => `<${ns}:arg value='${xmlAttr(a)}'/>`).join('');
  const existing = findElement(xml, `${ns}:commandline`);
  if (existing !== undefined && !xml.slice(existing[0], existing[1]).endsWith('/>')) {
    const closeAt = existing[1] - `</${ns}:commandline>`.length;
    xml = xml.slice(0, closeAt) + args + xml.slice(closeAt);
  } else {
    if (existing !== undefined) xml = xml.slice(0, existing[0]) + xml.slice(existing[1]);
    const at = xml.lastIndexOf('</domain>');
    xml = `${xml.slice(0, at)}  <${ns}:commandline>${args}</${ns}:commandline>\n${xml.slice(at)}`;
  }
  return xml;
}

/** Runs the subcommand; returns the exit code. */
export async function runKubevirtHook(argv: string[], out: (text: string) => void = (t) => process.stdout.write(t)): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === '--help' || verb === '-h') {
    out(`${KUBEVIRT_HOOK_USAGE}\n`);
    return 0;
  }
  // The shim calls the hook binary itself; our image links onDefineDomain to `vhba kubevirt-hook onDefineDomain`.
  if (verb !== 'onDefineDomain') throw new UsageError(`vhba kubevirt-hook: want 'onDefineDomain', got ${JSON.stringify(verb ?? '')}`);
  const flags = parseFlags('kubevirt-hook', rest, {
    vmi: { type: 'string' },
    domain: { type: 'string' },
    'volumes-dir': { type: 'string', default: DEFAULT_VOLUMES_DIR },
    help: { type: 'boolean', short: 'h' },
  });
  if (flags.help === true) {
    out(`${KUBEVIRT_HOOK_USAGE}\n`);
    return 0;
  }
  const vmiText = required('kubevirt-hook', 'vmi', flags.vmi);
  const domain = required('kubevirt-hook', 'domain', flags.domain);
  let vmi: unknown;
  try {
    vmi = JSON.parse(vmiText);
  } catch (error) {
    throw new UsageError(`vhba kubevirt-hook: --vmi is not JSON: ${(error as Error).message}`, { cause: error });
  }
  out(transformDomainXml(domain, controllersFromVmi(vmi), flags['volumes-dir']));
  return 0;
}
