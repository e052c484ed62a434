import { registrySpecSchema } from '../api/registry.ts';
import type { RegistryResource } from '../api/registry-resource.ts';
import {
  condition,
  renderRegistryStatus,
  type DaemonSetState,
  type DeploymentState,
} from './status.ts';

function registry(spec: Record<string, unknown> = {}): RegistryResource & {
  metadata: { generation: number };
} {
  return {
    metadata: { name: 'main', namespace: 'berth-system', uid: 'uid-1', generation: 3 },
    spec: registrySpecSchema.parse(spec),
  };
}
const now = new Date('2030-01-01T00:00:00Z');
const rolledOut: DeploymentState = {
  replicas: 1,
  readyReplicas: 1,
  updatedReplicas: 1,
  observedGeneration: 2,
  generation: 2,
};
const proxies = (desired: number, ready: number, observed = 1): DaemonSetState => ({
  desired,
  ready,
  observedGeneration: observed,
  generation: 1,
});
const ready = (
  deployment: DeploymentState | undefined,
  nodeProxy: DaemonSetState | undefined,
  spec: Record<string, unknown> = {},
) =>
  renderRegistryStatus(registry(spec), { deployment, nodeProxy }, undefined, now).conditions?.find(
    (condition) => condition.type === 'Ready',
  );

describe('renderRegistryStatus', () => {
  it('is Ready once the registry pods and every node proxy are ready', () => {
    expect(ready(rolledOut, proxies(3, 3))).toMatchObject({
      status: 'True',
      reason: 'Available',
      message: '1 of 1 registry pods ready; 3 of 3 node proxies ready',
      observedGeneration: 3,
    });
  });

  it('is not Ready while a node proxy is not, and says how many are', () => {
    expect(ready(rolledOut, proxies(3, 2))).toMatchObject({
      status: 'False',
      reason: 'NodeProxyUnavailable',
      message: '1 of 1 registry pods ready; 2 of 3 node proxies ready',
    });
  });

  it('counts a DaemonSet with no node to run on as no fault', () => {
    expect(ready(rolledOut, proxies(0, 0))).toMatchObject({ status: 'True', reason: 'Available' });
  });

  it('believes no counts before the DaemonSet controller has seen the current spec', () => {
    // A DaemonSet just created or changed reports zero of zero before anyone counted.
    expect(ready(rolledOut, proxies(0, 0, 0))).toMatchObject({
      status: 'False',
      reason: 'NodeProxyUnavailable',
      message: expect.stringContaining('waiting for the DaemonSet controller'),
    });
    expect(ready(rolledOut, undefined)).toMatchObject({
      status: 'False',
      reason: 'NodeProxyUnavailable',
      message: expect.stringContaining('waiting for the node-proxy DaemonSet'),
    });
  });

  it('reports the registry pods first, and ignores node proxies without NodeProxy mode', () => {
    expect(ready(undefined, proxies(3, 3))).toMatchObject({
      status: 'False',
      reason: 'Progressing',
    });
    expect(ready(rolledOut, undefined, { nodeAccess: { mode: 'None' } })).toMatchObject({
      status: 'True',
      message: '1 of 1 registry pods ready',
    });
  });

  it('keeps lastTransitionTime while Ready keeps its status', () => {
    const first = renderRegistryStatus(
      registry(),
      { deployment: rolledOut, nodeProxy: proxies(2, 2) },
      undefined,
      now,
    );
    const later = renderRegistryStatus(
      registry(),
      { deployment: rolledOut, nodeProxy: proxies(3, 3) },
      first.conditions,
      new Date('2030-01-02T00:00:00Z'),
    );
    const readyOf = (status: typeof first) =>
      status.conditions?.find((condition) => condition.type === 'Ready');
    expect(readyOf(later)?.lastTransitionTime).toBe('2030-01-01T00:00:00Z');
    expect(readyOf(later)?.message).toContain('3 of 3 node proxies ready');
  });

  it('reports what the API refused as Degraded, at the generation it observed', () => {
    const status = renderRegistryStatus(
      registry(),
      { deployment: rolledOut, nodeProxy: proxies(1, 1) },
      undefined,
      now,
      { reason: 'ApplyFailed', message: 'cannot apply PersistentVolumeClaim x/y: immutable' },
    );
    expect(status.conditions?.find((c) => c.type === 'Degraded')).toEqual({
      type: 'Degraded',
      status: 'True',
      reason: 'ApplyFailed',
      message: 'cannot apply PersistentVolumeClaim x/y: immutable',
      observedGeneration: 3,
      lastTransitionTime: '2030-01-01T00:00:00Z',
    });
    expect(status.observedGeneration).toBe(3);
  });
});

describe('condition', () => {
  const ready = { type: 'Ready', status: 'True', reason: 'Available', message: 'ok' } as const;

  it('writes a new transition time in whole seconds, as the API serializes it', () => {
    expect(condition(undefined, ready, new Date('2030-01-01T10:20:30.456Z'))).toMatchObject({
      lastTransitionTime: '2030-01-01T10:20:30Z',
    });
  });

  it('keeps the time while the status holds, whatever the reason or message', () => {
    const first = condition(undefined, ready, now);
    const later = condition(
      [first],
      { ...ready, reason: 'Other', message: 'changed' },
      new Date('2031-01-01T00:00:00Z'),
    );
    expect(later.lastTransitionTime).toBe(first.lastTransitionTime);
    expect(
      condition([first], { ...ready, status: 'False' }, new Date('2031-01-01T00:00:00Z'))
        .lastTransitionTime,
    ).toBe('2031-01-01T00:00:00Z');
  });
});
