import { readableSize } from './usage-reports.ts';

describe('readableSize', () => {
  it('writes bytes in binary units with at most one decimal', () => {
    expect(readableSize(0)).toBe('0');
    expect(readableSize(1023)).toBe('1023');
    expect(readableSize(1024)).toBe('1Ki');
    expect(readableSize(1536)).toBe('1.5Ki');
    expect(readableSize(300 * 1024 + 700)).toBe('300.7Ki');
    expect(readableSize(12.5 * 1024 ** 2)).toBe('12.5Mi');
    expect(readableSize(20 * 1024 ** 3)).toBe('20Gi');
  });
});
