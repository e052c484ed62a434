import { readFile } from 'node:fs/promises';

const ticksPerSecond = 100;

/** CPU time, resident memory and its peak of a Linux process, from /proc. */
export async function processUsage(
  pid: number,
): Promise<{ cpuSeconds: number; rssMB: number; peakMB: number }> {
  const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ') ?? [];
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) =>
    Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
  return {
    cpuSeconds: (Number(stat[11]) + Number(stat[12])) / ticksPerSecond,
    rssMB: kb('VmRSS'),
    peakMB: kb('VmHWM'),
  };
}
