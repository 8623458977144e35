// A single-member etcd for a test API server: plain HTTP on loopback only
// (client and peer URLs on free 127.0.0.1 ports), data in a test-owned
// directory, fsync off (test data is disposable). Ready when /health says so.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ServerProcess, freePort } from './process.ts';
import { toolPath } from './tools.ts';

/** A running etcd. */
export interface EtcdServer {
  /** http://127.0.0.1:<port>, for kube-apiserver's --etcd-servers. */
  clientUrl: string;
  process: ServerProcess;
  /** Stops etcd (SIGTERM, then SIGKILL). Leaves its data directory to the caller. */
  stop(): Promise<void>;
}

export interface EtcdOptions {
  /** Directory for data and log; must exist. */
  dir: string;
  /** How long to wait for /health. Default 60 s. */
  readyTimeoutMs?: number;
}

/** GET <clientUrl>/health → {"health":"true"} once the member serves requests. */
async function etcdHealthy(clientUrl: string): Promise<boolean> {
  const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(2_000) });
  if (!res.ok) return false;
  const body = (await res.json()) as { health?: unknown };
  return body.health === 'true';
}

/** Starts etcd and waits until it is healthy. */
export async function startEtcd(opts: EtcdOptions): Promise<EtcdServer> {
  const clientUrl = `http://127.0.0.1:${await freePort()}`;
  const peerUrl = `http://127.0.0.1:${await freePort()}`;
  const dataDir = join(opts.dir, 'etcd-data');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const args = [
    '--name=vhba-test',
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=vhba-test=${peerUrl}`,
    '--initial-cluster-state=new',
    '--unsafe-no-fsync',
    '--logger=zap',
    '--log-level=warn',
  ];
  const proc = new ServerProcess('etcd', toolPath('etcd'), args, join(opts.dir, 'etcd.log'));
  try {
    await proc.waitUntil('healthy /health', () => etcdHealthy(clientUrl), opts.readyTimeoutMs ?? 60_000);
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return { clientUrl, process: proc, stop: () => proc.stop() };
}
