import { nodePortConflicts } from './node-ports.ts';

describe('node port conflicts', () => {
  it('let the oldest Registry keep a port and name it to the others', () => {
    const conflicts = nodePortConflicts([
      { key: 'b/newer', mode: 'NodeProxy', port: 5000, createdAt: '2026-11-02T00:00:00Z' },
      { key: 'a/older', mode: 'NodeProxy', port: 5000, createdAt: '2026-11-01T00:00:00Z' },
      { key: 'c/other-port', mode: 'NodeProxy', port: 5001, createdAt: '2026-11-03T00:00:00Z' },
      { key: 'd/no-proxy', mode: 'None', port: 5000, createdAt: '2026-10-01T00:00:00Z' },
    ]);
    expect([...conflicts]).toEqual([['b/newer', 'a/older']]);
  });

  it('break ties by name, so every replica decides the same', () => {
    const at = '2026-11-01T00:00:00Z';
    const conflicts = nodePortConflicts([
      { key: 'x/z', mode: 'NodeProxy', port: 5000, createdAt: at },
      { key: 'x/a', mode: 'NodeProxy', port: 5000, createdAt: at },
    ]);
    expect([...conflicts]).toEqual([['x/z', 'x/a']]);
  });
});
