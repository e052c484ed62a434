import { runConformanceSuite as runSuite } from '../support/conformance.ts';
import { temporaryDirectory } from '../support/processes.ts';
import { startBerth } from '../support/registries.ts';
import { adminPassword, startAuthRegistry } from '../support/auth.ts';
import { describeWithTools } from '../support/tools.ts';

describeWithTools(['conformance'], 'OCI distribution-spec conformance', (tools) => {
  it('passes every workflow: pull, push, content discovery and content management', async () => {
    const storage = await temporaryDirectory('conformance-data');
    const registry = await startBerth(storage.path, { extraArgs: ['--log-level', 'warn'] });
    try {
      await runSuite(tools.conformance as string, registry.host, {});
    } finally {
      await registry.stop();
      await storage.remove();
    }
  });

  it('passes every workflow with token authentication on', async () => {
    const auth = await startAuthRegistry({ namespaces: {}, repositories: [] });
    try {
      await runSuite(tools.conformance as string, auth.registry.host, {
        OCI_USERNAME: 'admin',
        OCI_PASSWORD: adminPassword,
      });
    } finally {
      await auth.stop();
    }
  });
});
