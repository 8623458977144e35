// The LeaseClient (leader.ts) over the Kubernetes API: coordination.k8s.io/v1
// Leases read, created and replaced (PUT carries metadata.resourceVersion, so
// a concurrent writer gets 409 Conflict).
import type { Lease, LeaseClient } from '../leader.ts';
import type { KubeHttp } from './kube-http.ts';

const path = (namespace: string, name?: string): string =>
  `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases${name === undefined ? '' : `/${encodeURIComponent(name)}`}`;

/** See the file comment. */
export class KubeLeaseClient implements LeaseClient {
  private readonly http: KubeHttp;
  constructor(http: KubeHttp) {
    this.http = http;
  }
  get(namespace: string, name: string): Promise<Lease> {
    return this.http.send<Lease>({ method: 'GET', path: path(namespace, name) });
  }
  create(lease: Lease): Promise<Lease> {
    return this.http.send<Lease>({ method: 'POST', path: path(lease.metadata.namespace), body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', ...lease } });
  }
  update(lease: Lease): Promise<Lease> {
    return this.http.send<Lease>({ method: 'PUT', path: path(lease.metadata.namespace, lease.metadata.name), body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', ...lease } });
  }
}
