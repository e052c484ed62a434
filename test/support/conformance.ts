import { expect } from '@jest/globals';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { run, temporaryDirectory } from './processes.ts';

/**
 * The OCI distribution-spec conformance suite, every API and data toggle on that Berth supports
 * (all of them but sparse manifests, which Berth refuses by design: a manifest may not name a
 * blob the registry lacks).
 */
const suiteEnvironment = {
  OCI_TLS: 'disabled',
  OCI_REPO1: 'conformance/repo1',
  OCI_REPO2: 'conformance/repo2',
  OCI_VERSION: '1.1',
  OCI_LOG: 'warn',
  OCI_API_PULL: 'true',
  OCI_API_PUSH: 'true',
  OCI_API_BLOBS_ATOMIC: 'true',
  OCI_API_BLOBS_DELETE: 'true',
  OCI_API_BLOBS_DIGEST_HEADER: 'true',
  OCI_API_BLOBS_UPLOAD_CANCEL: 'true',
  OCI_API_MANIFESTS_ATOMIC: 'true',
  OCI_API_MANIFESTS_DELETE: 'true',
  OCI_API_MANIFESTS_DIGEST_HEADER: 'true',
  OCI_API_MANIFESTS_TAG_PARAM: 'true',
  OCI_API_TAGS_ATOMIC: 'true',
  OCI_API_TAGS_DELETE: 'true',
  OCI_API_TAGS_LIST: 'true',
  OCI_API_REFERRER: 'true',
  OCI_DATA_SPARSE: 'false',
};

/** Areas the suite may leave unrun, and why. */
const expectedNotPassed: Record<string, string> = {
  // Berth mounts only with `from` (a mount without it would reveal other repositories' blobs).
  'Blob anonymous mount': 'Skip',
  'Sparse Manifests': 'Disabled',
};

interface SuiteResults {
  apis: Record<string, string>;
  data: Record<string, string>;
}

/** Runs the suite against `host` and expects every area Berth supports to pass. */
export async function runConformanceSuite(
  conformance: string,
  host: string,
  credentials: Record<string, string>,
): Promise<void> {
  const results = await temporaryDirectory('conformance-results');
  try {
    const outcome = await run(conformance, [], {
      cwd: results.path,
      env: {
        ...process.env,
        ...suiteEnvironment,
        ...credentials,
        OCI_REGISTRY: host,
        OCI_RESULTS_DIR: results.path,
      },
      allowFailure: true,
    });
    const summary = parseYaml(
      await readFile(join(results.path, 'results.yaml'), 'utf8'),
    ) as SuiteResults;
    const outcomes = { ...summary.apis, ...summary.data };
    const notPassed = Object.fromEntries(
      Object.entries(outcomes).filter(([, status]) => status !== 'Pass'),
    );
    expect({ exitCode: outcome.code, notPassed }).toEqual({
      exitCode: 0,
      notPassed: expectedNotPassed,
    });
    // The suite really ran the four workflows rather than skipping them.
    for (const area of [
      'Blob push',
      'Manifest get by tag',
      'Tag listing',
      'Referrers',
      'Manifest delete',
      'Blob delete',
    ]) {
      expect(outcomes[area]).toBe('Pass');
    }
    expect(Object.keys(outcomes).length).toBeGreaterThan(40);
  } finally {
    await results.remove();
  }
}
