/**
 * The test cluster's dynamic volume provisioner, run by the harness as a process on the node
 * (`node provisioner.ts KUBECONFIG DIRECTORY`). It does what a local-path provisioner does in a
 * real single-node cluster: a claim of the `berth-local` class gets a directory of its own and
 * a hostPath PersistentVolume bound to it; a released volume of the class is deleted with its
 * directory. Directories are mode 0777 like local-path's, because hostPath volumes ignore
 * fsGroup and pods run as non-root users.
 */
import { chmod, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isConflict, KubeClient, type KubeObject } from '../../../src/kube/client.ts';
import { Informer } from '../../../src/kube/informer.ts';
import { createLogger } from '../../../src/observability/logger.ts';
import { clusterStorage } from './node-config.ts';

const { provisionerName, storageClassName } = clusterStorage;

interface Claim extends KubeObject {
  metadata: KubeObject['metadata'] & { uid: string; annotations?: Record<string, string> };
  spec: {
    storageClassName?: string;
    accessModes: string[];
    resources: { requests: { storage: string } };
    volumeName?: string;
  };
  status?: { phase?: string };
}

interface Volume extends KubeObject {
  metadata: KubeObject['metadata'] & { annotations?: Record<string, string> };
  spec: { hostPath?: { path: string }; persistentVolumeReclaimPolicy?: string };
  status?: { phase?: string };
}

const [kubeconfig, directory] = process.argv.slice(2);
if (!kubeconfig || !directory) throw new Error('usage: provisioner.ts KUBECONFIG DIRECTORY');
const logger = createLogger('info', 'test-provisioner');
const client = KubeClient.fromFile(kubeconfig);
const claims = new Informer<Claim>(client, { path: '/api/v1/persistentvolumeclaims' }, logger);
const volumes = new Informer<Volume>(client, { path: '/api/v1/persistentvolumes' }, logger);

/** Claims the PV controller handed to this provisioner and that have no volume yet. */
function wantsVolume(claim: Claim): boolean {
  return (
    claim.status?.phase === 'Pending' &&
    !claim.spec.volumeName &&
    claim.metadata.annotations?.['volume.kubernetes.io/storage-provisioner'] === provisionerName
  );
}

async function provision(claim: Claim): Promise<void> {
  const name = `pvc-${claim.metadata.uid}`;
  const path = join(directory as string, name);
  await mkdir(path, { recursive: true });
  await chmod(path, 0o777);
  try {
    await client.request('POST', '/api/v1/persistentvolumes', {
      body: {
        apiVersion: 'v1',
        kind: 'PersistentVolume',
        metadata: { name, annotations: { 'pv.kubernetes.io/provisioned-by': provisionerName } },
        spec: {
          capacity: { storage: claim.spec.resources.requests.storage },
          accessModes: claim.spec.accessModes,
          persistentVolumeReclaimPolicy: 'Delete',
          storageClassName,
          hostPath: { path, type: 'Directory' },
          claimRef: {
            namespace: claim.metadata.namespace,
            name: claim.metadata.name,
            uid: claim.metadata.uid,
          },
        },
      },
    });
    logger.info(
      { claim: `${claim.metadata.namespace}/${claim.metadata.name}`, volume: name },
      'volume provisioned',
    );
  } catch (error) {
    if (!isConflict(error)) throw error; // 409: provisioned already
  }
}

async function reclaim(volume: Volume): Promise<void> {
  const path = volume.spec.hostPath?.path;
  if (path?.startsWith(`${directory}/`)) await rm(path, { recursive: true, force: true });
  await client.delete(`/api/v1/persistentvolumes/${volume.metadata.name}`);
  logger.info({ volume: volume.metadata.name }, 'volume deleted');
}

function report(error: unknown): void {
  logger.error({ err: error }, 'provisioning failed');
}

claims.onChange((type, claim) => {
  if (type !== 'deleted' && wantsVolume(claim)) provision(claim).catch(report);
});
volumes.onChange((type, volume) => {
  const ours = volume.metadata.annotations?.['pv.kubernetes.io/provisioned-by'] === provisionerName;
  if (type !== 'deleted' && ours && volume.status?.phase === 'Released')
    reclaim(volume).catch(report);
});
claims.start();
volumes.start();
await Promise.all([claims.synced, volumes.synced]);
// The harness waits for this line.
logger.info('provisioner ready');
process.on('SIGTERM', () => {
  claims.stop();
  volumes.stop();
  process.exit(0);
});
