// A real kube-apiserver + etcd on loopback for integration tests.
//
//   const cluster = await startTestApiServer();
//   ... kubectl --kubeconfig cluster.kubeconfigPath ...
//   await cluster.stop();
//
// etcd listens on free 127.0.0.1 ports (plain HTTP, loopback only);
// kube-apiserver serves HTTPS on 127.0.0.1:<free port> with a throwaway CA,
// authenticates client certificates (CN = user, O = groups), authorizes with
// RBAC, and signs service-account tokens with a fresh key. The admin user is
// in group system:masters (superuser). No controller-manager or scheduler
// runs: objects are stored and validated, nothing reconciles them.
// Binaries come from scripts/build-go-tools.sh (see tools.ts).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startEtcd, type EtcdServer } from './etcd.ts';
import { createTestPki, issueClientCert, type CertKeyPair, type TestPki } from './pki.ts';
import { ServerProcess, freePort } from './process.ts';
import { toolPath } from './tools.ts';

/** A running test control plane. */
export interface TestApiServer {
  /** kubeconfig for the admin user (system:masters), credentials embedded. */
  kubeconfigPath: string;
  /** https://127.0.0.1:<port> */
  server: string;
  /** The CA that signed the serving and client certificates (PEM file). */
  caCertPath: string;
  /** etcd's client URL (http://127.0.0.1:<port>). */
  etcdUrl: string;
  /** Temporary directory holding certificates, logs and etcd's data; removed by stop(). */
  dir: string;
  /** kube-apiserver's log file (inside dir). */
  apiServerLogPath: string;
  /** Writes a kubeconfig for another user (client certificate; CN = user, O = groups) and returns its path. */
  kubeconfigFor(user: string, groups: readonly string[]): string;
  /** Stops kube-apiserver, then etcd, and removes dir. Safe to call twice. */
  stop(): Promise<void>;
}

export interface TestApiServerOptions {
  /** Extra kube-apiserver flags (e.g. "--feature-gates=..."); later flags win. */
  extraApiServerArgs?: readonly string[];
  /** How long to wait for /readyz. Default 180 s (a cold start on a busy 2-core machine is slow). */
  readyTimeoutMs?: number;
  /** Keep dir after stop() (for debugging). Default false. */
  keepDir?: boolean;
}

/** The admin user written to kubeconfigPath. */
export const ADMIN_USER = 'vhba-admin';
const CLUSTER_NAME = 'vhba-test';

/** Writes a kubeconfig (kubectl's Config v1) with the CA and client certificate embedded. */
function writeKubeconfig(path: string, server: string, caCertPath: string, user: string, client: CertKeyPair): void {
  const b64 = (file: string): string => readFileSync(file).toString('base64');
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: CLUSTER_NAME, cluster: { server, 'certificate-authority-data': b64(caCertPath) } }],
    users: [{ name: user, user: { 'client-certificate-data': b64(client.certPath), 'client-key-data': b64(client.keyPath) } }],
    contexts: [{ name: CLUSTER_NAME, context: { cluster: CLUSTER_NAME, user } }],
    'current-context': CLUSTER_NAME,
  };
  writeFileSync(path, stringify(config), { mode: 0o600 });
}

/** GET <server><path> with the admin's client certificate; resolves to the HTTP status. */
function httpsStatus(url: string, caCertPath: string, client: CertKeyPair): Promise<number> {
  return new Promise((resolveStatus, reject) => {
    const req = request(
      url,
      {
        method: 'GET',
        ca: readFileSync(caCertPath),
        cert: readFileSync(client.certPath),
        key: readFileSync(client.keyPath),
        timeout: 5_000,
      },
      (res) => {
        res.resume();
        res.once('end', () => resolveStatus(res.statusCode ?? 0));
      },
    );
    req.once('timeout', () => req.destroy(new Error('request timed out')));
    req.once('error', reject);
    req.end();
  });
}

/** kube-apiserver's flags for this PKI, etcd and port. */
function apiServerArgs(dir: string, pki: TestPki, etcdUrl: string, port: number): string[] {
  return [
    `--etcd-servers=${etcdUrl}`,
    '--bind-address=127.0.0.1',
    '--advertise-address=127.0.0.1',
    `--secure-port=${port}`,
    `--cert-dir=${join(dir, 'apiserver-certs')}`, // unused (TLS files given); keeps the default /var/run/kubernetes untouched
    `--tls-cert-file=${pki.serving.certPath}`,
    `--tls-private-key-file=${pki.serving.keyPath}`,
    `--client-ca-file=${pki.ca.certPath}`,
    '--authorization-mode=RBAC',
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
    `--service-account-key-file=${pki.serviceAccount.publicKeyPath}`,
    `--service-account-signing-key-file=${pki.serviceAccount.privateKeyPath}`,
    '--service-cluster-ip-range=10.96.0.0/24', // allocation only: no traffic goes there
    // Endpoints may not hold a loopback address: don't publish the apiserver's own.
    '--endpoint-reconciler-type=none',
    '--enable-priority-and-fairness=false',
    '--profiling=false',
    // As kubeadm and kind run it: privileged pods are admitted (the chart's
    // engine.hostDevicePassthrough needs them; Pod Security still applies).
    '--allow-privileged=true',
  ];
}

/** One attempt: etcd, then kube-apiserver, then wait for /readyz. */
async function startOnce(dir: string, pki: TestPki, admin: CertKeyPair, opts: TestApiServerOptions): Promise<TestApiServer> {
  const etcd: EtcdServer = await startEtcd({ dir });
  let apiServer: ServerProcess | undefined;
  try {
    const port = await freePort();
    const server = `https://127.0.0.1:${port}`;
    const args = [...apiServerArgs(dir, pki, etcd.clientUrl, port), ...(opts.extraApiServerArgs ?? [])];
    apiServer = new ServerProcess('kube-apiserver', toolPath('kube-apiserver'), args, join(dir, 'kube-apiserver.log'));
    const proc = apiServer;
    await proc.waitUntil(
      '200 from /readyz',
      async () => (await httpsStatus(`${server}/readyz`, pki.ca.certPath, admin)) === 200,
      opts.readyTimeoutMs ?? 180_000,
      500,
    );
    const kubeconfigPath = join(dir, 'kubeconfig');
    writeKubeconfig(kubeconfigPath, server, pki.ca.certPath, ADMIN_USER, admin);
    let stopped = false;
    return {
      kubeconfigPath,
      server,
      caCertPath: pki.ca.certPath,
      etcdUrl: etcd.clientUrl,
      dir,
      apiServerLogPath: proc.logPath,
      kubeconfigFor(user, groups) {
        const path = join(dir, `kubeconfig-${user.replace(/[^A-Za-z0-9._-]/g, '_')}`);
        writeKubeconfig(path, server, pki.ca.certPath, user, issueClientCert(pki, user, groups));
        return path;
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        await proc.stop();
        await etcd.stop();
        if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await apiServer?.stop();
    await etcd.stop();
    throw err;
  }
}

/**
 * Starts etcd and kube-apiserver on loopback and waits until the API server
 * is ready. Retries twice if a port picked as free was taken meanwhile.
 */
export async function startTestApiServer(opts: TestApiServerOptions = {}): Promise<TestApiServer> {
  const dir = mkdtempSync(join(tmpdir(), 'vhba-apiserver-'));
  try {
    const pki = createTestPki(dir);
    const admin = issueClientCert(pki, ADMIN_USER, ['system:masters']);
    for (let attempt = 1; ; attempt++) {
      try {
        return await startOnce(dir, pki, admin, opts);
      } catch (err) {
        const portRace = /address already in use/i.test((err as Error).message);
        if (!portRace || attempt >= 3) throw err;
        rmSync(join(dir, 'etcd-data'), { recursive: true, force: true });
      }
    }
  } catch (err) {
    if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
