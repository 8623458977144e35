// Engine metrics (issue 9: "limits reported in errors and metrics") in the
// Prometheus text exposition format (version 0.0.4), written by hand from
// Engine.list() and the per-controller limits (hba/security.ts), and the small
// HTTP server for /metrics and /healthz behind `vhba engine --metrics-addr`.
import { createServer } from 'node:http';
import type pino from 'pino';
import type { ControllerInfo } from './engine-api.ts';
import { limitMetrics, type ControllerLimits } from './security.ts';

type Labels = Record<string, string | number>;

/** `{k="v",...}` with values escaped as the exposition format asks (\\, \", \n). */
function labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k}="${String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

/** HELP text of each limit gauge from limitMetrics(). */
const LIMIT_HELP: Record<string, string> = {
  vhba_controller_limit_request_queues: 'Most request queues a controller may have.',
  vhba_controller_limit_queue_size: 'Largest ring size (descriptors) a controller accepts.',
  vhba_controller_limit_memory_regions: 'Most guest memory regions per SET_MEM_TABLE.',
  vhba_controller_limit_luns: 'Most LUNs attached to one controller.',
  vhba_controller_limit_in_flight: 'Most requests in flight per controller ((queues + 2) x queue size).',
};

/** The exposition text for `controllers` (Engine.list()) under `limits`. */
export function renderEngineMetrics(controllers: readonly ControllerInfo[], limits: ControllerLimits): string {
  const lines: string[] = [];
  const family = (name: string, type: 'gauge' | 'counter', help: string, samples: [Labels, number][]): void => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labelText(labels)} ${value}`);
  };
  const perController = (value: (c: ControllerInfo) => number): [Labels, number][] => controllers.map((c) => [{ controller: c.id }, value(c)]);
  const perLun = (value: (l: ControllerInfo['luns'][number]) => number): [Labels, number][] =>
    controllers.flatMap((c) => c.luns.map((l): [Labels, number] => [{ controller: c.id, target: l.target, lun: l.lun }, value(l)]));
  const perQueue = (value: (q: NonNullable<ControllerInfo['requestQueues']>[number]) => number): [Labels, number][] =>
    controllers.flatMap((c) => (c.requestQueues ?? []).map((q): [Labels, number] => [{ controller: c.id, queue: q.queue }, value(q)]));

  family('vhba_engine_controllers', 'gauge', 'Controllers the engine serves.', [[{}, controllers.length]]);
  family('vhba_controller_connected', 'gauge', '1 while a front-end (QEMU) is connected to the controller.', perController((c) => (c.connected ? 1 : 0)));
  family('vhba_controller_luns', 'gauge', 'LUNs attached to the controller.', perController((c) => c.luns.length));
  family('vhba_controller_request_queues', 'gauge', 'Request queues the controller offers (virtio-scsi num_queues).', perController((c) => c.numRequestQueues));
  const limitValues = limitMetrics(limits);
  for (const [name, value] of Object.entries(limitValues)) family(name, 'gauge', LIMIT_HELP[name] ?? 'Per-controller limit.', perController(() => value));
  family('vhba_request_queue_commands_total', 'counter', 'Commands the TypeScript path ran on the request queue (current connection).', perQueue((q) => q.commands));
  family('vhba_request_queue_in_flight', 'gauge', 'Commands in flight on the request queue (TypeScript path).', perQueue((q) => q.inFlight));
  family('vhba_lun_reads_total', 'counter', 'Read commands completed on the LUN.', perLun((l) => l.reads));
  family('vhba_lun_writes_total', 'counter', 'Write commands completed on the LUN.', perLun((l) => l.writes));
  family('vhba_lun_read_bytes_total', 'counter', 'Bytes read from the LUN.', perLun((l) => l.bytesRead));
  family('vhba_lun_written_bytes_total', 'counter', 'Bytes written to the LUN.', perLun((l) => l.bytesWritten));
  return `${lines.join('\n')}\n`;
}

/** A running metrics server. */
export interface MetricsServer {
  /** The bound port (the asked one, or the one the kernel picked for 0). */
  port: number;
  close(): Promise<void>;
}

/** Serves GET /metrics (renderEngineMetrics of `source.list()`) and /healthz
 * on host:port (host undefined: all interfaces; port 0: a free one). */
export async function startMetricsServer(
  address: { host: string | undefined; port: number },
  source: { list(): ControllerInfo[] },
  limits: ControllerLimits,
  logger?: pino.Logger,
): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === '/metrics') {
      let body: string;
      try {
        body = renderEngineMetrics(source.list(), limits);
      } catch (err) {
        logger?.error({ err }, 'rendering metrics failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(body);
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => resolve());
  });
  const bound = server.address();
  return {
    port: typeof bound === 'object' && bound !== null ? bound.port : address.port,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
