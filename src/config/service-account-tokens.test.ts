import { ConfigError, parseRegistryConfig } from './registry.ts';

const withTokens = (serviceAccountTokens: unknown) =>
  parseRegistryConfig({ auth: { serviceAccountTokens } }, 'test');

describe('auth.serviceAccountTokens', () => {
  it('takes an audience, with or without a kubeconfig', () => {
    expect(withTokens({ audience: 'berth' }).auth?.serviceAccountTokens).toEqual({
      audience: 'berth',
    });
    expect(
      withTokens({ audience: 'berth', kubeconfig: '/etc/kube' }).auth?.serviceAccountTokens,
    ).toEqual({ audience: 'berth', kubeconfig: '/etc/kube' });
  });

  it.each([
    [{}, /auth\.serviceAccountTokens\.audience/],
    [{ audience: '' }, /audience is required/],
    [{ audience: 'https://kubernetes.default.svc.cluster.local' }, /API server's own audience/],
    [{ audience: 'berth', apiServer: 'https://10.0.0.1' }, /Unrecognized key.*apiServer/],
  ])('refuses %j', (settings, message) => {
    expect(() => withTokens(settings)).toThrow(ConfigError);
    expect(() => withTokens(settings)).toThrow(message);
  });
});
