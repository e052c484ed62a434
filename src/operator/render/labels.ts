/** Labels and names every object Berth renders for a Registry carries. */
export const fieldManager = 'berth-operator';

export function registryLabels(
  registryName: string,
  component: 'registry' | 'node-proxy',
): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'berth',
    'app.kubernetes.io/instance': registryName,
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/managed-by': fieldManager,
  };
}

/** Names of the objects a Registry owns; one place, so controllers and tests agree. */
export function registryObjectNames(registryName: string) {
  const base = `berth-${registryName}`;
  return {
    deployment: base,
    service: base,
    serviceAccount: base,
    config: `${base}-config`,
    data: `${base}-data`,
    keys: `${base}-keys`,
    admin: `${base}-admin`,
    ca: `${base}-ca`,
    tls: `${base}-tls`,
    nodeProxy: `${base}-node-proxy`,
    disruptionBudget: base,
  };
}
