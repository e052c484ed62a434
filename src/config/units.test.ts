import { parseDuration, parseSize } from './units.ts';

describe('parseDuration', () => {
  it.each([
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h30m', 5_400_000],
    ['250ms', 250],
    ['720h', 2_592_000_000],
  ])('%s is %d ms', (text, millis) => {
    expect(parseDuration(text)).toBe(millis);
  });
  it.each(['', '5', 'm', '5 m', '5x', '1h 2m', '-1s'])('rejects %p', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});

describe('parseSize', () => {
  it.each([
    ['4096', 4096],
    ['64Mi', 64 * 1024 ** 2],
    ['20Gi', 20 * 1024 ** 3],
    ['1G', 1e9],
  ])('%s is %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });
  it.each(['', 'Gi', '1GB', '-1', '1 Gi'])('rejects %p', (text) => {
    expect(parseSize(text)).toBeUndefined();
  });
});
