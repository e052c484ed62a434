/**
 * What a Node process under test still holds, read through its inspector (started with
 * `--inspect=127.0.0.1:<port>`): a full garbage collection first, then `process.memoryUsage()`.
 * Unlike the resident set, which keeps whatever freed memory V8 and the allocator have not yet
 * given back, this is what the process's objects and buffers really retain.
 */
export interface Retained {
  /** Live objects on the JavaScript heap, in MiB. */
  heapMiB: number;
  /** Buffers and other memory outside the heap that live objects own, in MiB. */
  externalMiB: number;
}

interface DevToolsTarget {
  webSocketDebuggerUrl: string;
}

export class Inspector {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: Error) => void }
  >();

  private readonly socket: WebSocket;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data)) as {
        id?: number;
        result?: unknown;
        error?: { message: string };
      };
      const waiter = message.id === undefined ? undefined : this.pending.get(message.id);
      if (!waiter || message.id === undefined) return;
      this.pending.delete(message.id);
      if (message.error) waiter.reject(new Error(`inspector: ${message.error.message}`));
      else waiter.resolve(message.result);
    });
  }

  /** Attaches to the inspector listening on loopback `port`. */
  static async attach(port: number): Promise<Inspector> {
    const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as
      DevToolsTarget[] | undefined;
    const url = targets?.[0]?.webSocketDebuggerUrl;
    if (!url) throw new Error(`no inspector target on 127.0.0.1:${port}`);
    const socket = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      socket.addEventListener('open', () => resolve(), { once: true });
      socket.addEventListener('error', () => reject(new Error(`cannot open ${url}`)), {
        once: true,
      });
    });
    return new Inspector(socket);
  }

  private call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ id, method, params }));
    });
  }

  /** What live objects hold after a full collection. */
  async retained(): Promise<Retained> {
    await this.call('HeapProfiler.collectGarbage');
    const answer = (await this.call('Runtime.evaluate', {
      expression: 'JSON.stringify(process.memoryUsage())',
      returnByValue: true,
    })) as { result: { value: string } };
    const usage = JSON.parse(answer.result.value) as { heapUsed: number; external: number };
    return { heapMiB: usage.heapUsed / 1024 ** 2, externalMiB: usage.external / 1024 ** 2 };
  }

  close(): void {
    this.socket.close();
  }
}
