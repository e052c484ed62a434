#!/usr/bin/env node
// The provider's own entry, for the kubelet's --image-credential-provider-bin-dir: it loads only
// the provider, so a pull does not pay for the registry's modules.
import { runCredentialProvider } from './command.ts';

process.exitCode = await runCredentialProvider(process.argv.slice(2), {
  stdin: process.stdin,
  write: (text) => process.stdout.write(text),
  error: (text) => process.stderr.write(text),
});
