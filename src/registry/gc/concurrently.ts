/**
 * Runs `task` over `items` with at most `limit` in flight, in no particular order; rejects with
 * the first failure once the tasks already started have settled. For the collector's storage
 * calls, which are independent of each other and dominated by round trips (S3).
 */
export async function concurrently<T>(
  items: readonly T[],
  limit: number,
  task: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const item = items[next++] as T;
      try {
        await task(item);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
}
