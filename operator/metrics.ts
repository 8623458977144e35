// Operator metrics in the Prometheus text exposition format (version 0.0.4),
// written by hand, and the small HTTP server for /metrics, /healthz and
// /readyz.
import { createServer, type Server } from 'node:http';

type Labels = Record<string, string>;

function labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

/** Histogram buckets for reconcile durations, in seconds. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] as const;

/** The operator's metrics. */
export class OperatorMetrics {
  private readonly reconciles = new Map<string, number>();
  private readonly actions = new Map<string, number>();
  private readonly bucketCounts = DURATION_BUCKETS.map(() => 0);
  private durationSum = 0;
  private durationCount = 0;
  private conflicts = 0;
  /** Set by the owner: disks per phase now, whether this replica leads, queue depth. */
  disksByPhase: () => Map<string, number> = () => new Map();
  isLeader: () => boolean = () => false;
  queueDepth: () => number = () => 0;

  /** Counts one reconcile of a VM with its result and duration. */
  observeReconcile(result: 'success' | 'error' | 'requeue', seconds: number): void {
    this.reconciles.set(result, (this.reconciles.get(result) ?? 0) + 1);
    this.durationSum += seconds;
    this.durationCount += 1;
    DURATION_BUCKETS.forEach((le, i) => {
      if (seconds <= le) this.bucketCounts[i] = (this.bucketCounts[i] ?? 0) + 1;
    });
  }

  /** Counts applied actions by kind. */
  observeActions(kind: string, count: number): void {
    this.actions.set(kind, (this.actions.get(kind) ?? 0) + count);
  }

  observeConflicts(count: number): void {
    this.conflicts += count;
  }

  /** The exposition text. */
  render(): string {
    const lines: string[] = [];
    const family = (name: string, type: string, help: string) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    family('vhba_operator_reconcile_total', 'counter', 'VM reconciles by result.');
    for (const result of ['success', 'error', 'requeue']) lines.push(`vhba_operator_reconcile_total${labelText({ result })} ${this.reconciles.get(result) ?? 0}`);
    family('vhba_operator_reconcile_duration_seconds', 'histogram', 'Time to reconcile one VM.');
    DURATION_BUCKETS.forEach((le, i) => lines.push(`vhba_operator_reconcile_duration_seconds_bucket${labelText({ le: String(le) })} ${this.bucketCounts[i] ?? 0}`));
    lines.push(`vhba_operator_reconcile_duration_seconds_bucket${labelText({ le: '+Inf' })} ${this.durationCount}`);
    lines.push(`vhba_operator_reconcile_duration_seconds_sum ${this.durationSum}`, `vhba_operator_reconcile_duration_seconds_count ${this.durationCount}`);
    family('vhba_operator_actions_total', 'counter', 'Side effects applied, by kind.');
    for (const [kind, n] of [...this.actions].sort()) lines.push(`vhba_operator_actions_total${labelText({ kind })} ${n}`);
    family('vhba_operator_conflicts_total', 'counter', 'Writes refused because the object changed (re-read and re-planned).');
    lines.push(`vhba_operator_conflicts_total ${this.conflicts}`);
    family('vhba_operator_disks', 'gauge', 'VirtualDisks by phase.');
    for (const [phase, n] of [...this.disksByPhase()].sort()) lines.push(`vhba_operator_disks${labelText({ phase })} ${n}`);
    family('vhba_operator_leader', 'gauge', '1 when this replica holds the lease.');
    lines.push(`vhba_operator_leader ${this.isLeader() ? 1 : 0}`);
    family('vhba_operator_queue_depth', 'gauge', 'VMs waiting to be reconciled.');
    lines.push(`vhba_operator_queue_depth ${this.queueDepth()}`);
    family('process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.');
    lines.push(`process_resident_memory_bytes ${process.memoryUsage.rss()}`);
    return `${lines.join('\n')}\n`;
  }
}

/** Parses "host:port" or ":port" (all interfaces); port 0 picks a free one. */
export function parseListenAddress(value: string): { host: string | undefined; port: number } {
  const m = /^(.*):([0-9]{1,5})$/.exec(value);
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || port > 65535) throw new Error(`${JSON.stringify(value)} is not host:port or :port`);
  const host = m[1] === '' ? undefined : m[1]?.replace(/^\[(.*)\]$/, '$1');
  return { host, port };
}

/** Serves /metrics, /healthz (the process is alive) and /readyz (`ready()`). */
export async function startProbeServer(address: string, metrics: OperatorMetrics, ready: () => boolean): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const { host, port } = parseListenAddress(address);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(metrics.render());
    } else if (path === '/healthz' || path === '/livez') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const ok = ready();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'not ready\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const bound = server.address();
  return {
    server,
    port: typeof bound === 'object' && bound !== null ? bound.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
