/**
 * The code's share of event-loop delay: a timer's lateness, capped by the
 * main thread's CPU time since it last fired (on a loaded machine most of
 * a long delay can be the scheduler running other processes). Shared by
 * the attack server and accept-cost.ts.
 */
export class BusyTurns {
  /** The longest busy stretch (ms) since the start or the last {@link reset}. */
  maxMs = 0;
  private at = performance.now();
  private cpu = process.threadCpuUsage();
  private procCpu = process.cpuUsage();
  private readonly timer: ReturnType<typeof setInterval>;

  /**
   * `onGap(lateMs, busyMs, processMs)` sees every tick (for traces); `processMs` is the CPU time of
   * all the process's threads since the previous tick (the thread pool's and the GC helpers' too: on
   * a server pinned to one CPU they take it from the main thread).
   */
  constructor(tickMs: number, onGap?: (lateMs: number, busyMs: number, processMs: number) => void) {
    this.timer = setInterval(() => {
      const now = performance.now();
      const c = process.threadCpuUsage(this.cpu);
      this.cpu = process.threadCpuUsage();
      const p = process.cpuUsage(this.procCpu);
      this.procCpu = process.cpuUsage();
      const late = now - this.at - tickMs;
      this.at = now;
      const busy = Math.min(late, (c.user + c.system) / 1000);
      if (busy > this.maxMs) this.maxMs = busy;
      onGap?.(late, busy, (p.user + p.system) / 1000);
    }, tickMs);
  }

  reset(): void {
    this.maxMs = 0;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
