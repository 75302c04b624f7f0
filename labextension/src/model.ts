/**
 * The status document of the AISpike server extension (GET aispike/api/status) and the pure
 * functions the widgets are drawn from: text, fill level, sparklines, when to notify.
 *
 * Nothing here touches the DOM or JupyterLab, so it is tested on its own.
 */

export type Level = 'ok' | 'warn' | 'full';

export interface ISliceGpu {
  index: number;
  uuid: string;
  model: string;
  memory_total_mib: number;
  limit_mib: number;
  mig_profile: string;
}

export interface ISlice {
  backend: string;
  model: string;
  requested_model: string;
  limit_mib: number;
  indices: number[];
  gpus: ISliceGpu[];
  live: boolean;
  /** A simulated inventory (the demo on a machine without GPUs): no device, no live use. */
  simulated?: boolean;
}

export interface IHistoryPoint {
  t: number;
  memory_used_mib: number;
  utilization_percent: number | null;
}

export interface IKernelUse {
  id: string;
  name: string;
  path: string;
  state: string;
  memory_used_mib: number;
  utilization_percent: number | null;
  pids: number[];
  by_gpu: Record<string, number>;
  history: IHistoryPoint[];
}

export interface IGpuUse {
  index: number;
  used_mib: number;
  limit_mib: number;
  fraction: number;
  level: Level;
}

export interface IUsage {
  memory_used_mib: number;
  memory_limit_mib: number;
  utilization_percent: number | null;
  level: Level;
  gpus: IGpuUse[];
  kernels: IKernelUse[];
  other: IKernelUse | null;
  last_gpu_activity: string | null;
}

export interface IIdle {
  available: boolean;
  error?: string;
  warned?: boolean;
  verdict?: string;
  reason?: string;
  evidence?: string[];
  stop_at?: string | null;
  warned_at?: string | null;
  message?: string;
  notice_id?: number | null;
}

export interface IQuota {
  available: boolean;
  error?: string;
  tier?: string;
  usage?: Record<string, number>;
  limits?: Record<string, number | null>;
  servers?: { server: string; charge: Record<string, number> }[];
}

export interface IStatus {
  version: number;
  time: number;
  user: string;
  server: string;
  source: string;
  nvml: { available: boolean; problems: string[] };
  slice: ISlice | null;
  usage: IUsage;
  thresholds: { warn: number; full: number };
  idle?: IIdle;
  quota?: IQuota;
}

export const NO_SLICE_TEXT = 'no GPU slice';
/** Before the first status arrives: the slice is not known yet, not absent. */
export const LOADING_TEXT = 'GPU …';

/** MiB as GiB with one decimal ("5.2"); whole numbers without one ("8"). */
export function gib(mib: number): string {
  const value = mib / 1024;
  const rounded = Math.round(value * 10) / 10;
  return Number.isInteger(rounded) ? rounded.toFixed(0) : rounded.toFixed(1);
}

/** The slice's GPUs that placement named (index -1: known only from the environment). */
function placedGpus(slice: ISlice): ISliceGpu[] {
  return slice.gpus.filter(g => g.index >= 0);
}

/** Real model names of the slice's GPUs ("any" is a choice in the form, not a model). */
function models(slice: ISlice): string[] {
  const names = slice.gpus.map(g => g.model).filter(m => m && m !== 'any');
  if (!names.length && slice.model && slice.model !== 'any') {
    names.push(...slice.model.split(',').map(m => m.trim()));
  }
  return [...new Set(names)];
}

/** Where the slice is: "GPU 1 (A100 80GB)", "GPUs 0, 1 (H200)", "A100 80GB" or "a GPU". */
export function placedOn(slice: ISlice): string {
  const placed = placedGpus(slice);
  const where = placed.length
    ? `${placed.length > 1 ? 'GPUs' : 'GPU'} ${placed.map(g => g.index).join(', ')}`
    : '';
  const what = models(slice).join(', ');
  if (where && what) {
    return `${where} (${what})`;
  }
  return where || what || 'a GPU';
}

/**
 * The status bar's text: "GPU 5.2 / 8 GiB", "2 GPUs 9.5 / 32 GiB", "GPU 1 · 4 GiB (simulated)"
 * when there is no live use to show, "no GPU slice", or "GPU …" before the first status.
 */
export function statusText(status: IStatus | null): string {
  if (!status) {
    return LOADING_TEXT;
  }
  if (!status.slice) {
    return NO_SLICE_TEXT;
  }
  const count = status.slice.gpus.length;
  const label = count > 1 ? `${count} GPUs` : 'GPU';
  if (!status.slice.live) {
    const placed = placedGpus(status.slice);
    const where =
      placed.length && placed.length === count
        ? `${count > 1 ? 'GPUs' : 'GPU'} ${placed.map(g => g.index).join(', ')}`
        : label;
    return (
      `${where} · ${gib(status.slice.limit_mib)} GiB` +
      (status.slice.simulated ? ' (simulated)' : '')
    );
  }
  return `${label} ${gib(status.usage.memory_used_mib)} / ${gib(status.slice.limit_mib)} GiB`;
}

/** The status bar's tooltip: where the slice is and each GPU's use. */
export function statusTitle(status: IStatus | null): string {
  if (!status) {
    return "Reading this server's GPU slice …";
  }
  if (!status.slice) {
    return 'This server has no GPU slice';
  }
  const s = status.slice;
  const lines = [
    `GPU slice: ${gib(s.limit_mib)} GiB on ${placedOn(s)}` + (s.simulated ? ' (simulated)' : '')
  ];
  if (s.live) {
    for (const g of status.usage.gpus) {
      lines.push(`GPU ${g.index}: ${gib(g.used_mib)} / ${gib(g.limit_mib)} GiB`);
    }
  } else if (s.simulated) {
    lines.push('Simulated GPUs: the server has the slice\'s settings but no device to use.');
  } else {
    lines.push('Live use unavailable: ' + (status.nvml.problems[0] || 'no NVML reading'));
  }
  return lines.join('\n');
}

/** Fill level of a fraction against the server's thresholds. */
export function levelOf(fraction: number, warn: number, full: number): Level {
  if (fraction >= full) {
    return 'full';
  }
  return fraction >= warn ? 'warn' : 'ok';
}

/** The CSS colour variable for a level (JupyterLab's theme colours). */
export function levelColour(level: Level): string {
  return {
    ok: 'var(--jp-success-color1)',
    warn: 'var(--jp-warn-color1)',
    full: 'var(--jp-error-color1)'
  }[level];
}

/**
 * An SVG polyline's points for a sparkline of ``values`` in a ``width`` x ``height`` box,
 * scaled to ``max`` (the slice limit for memory, 100 for utilisation).  Missing values
 * (null) are drawn as 0; one value is drawn as a flat line.
 */
export function sparklinePoints(
  values: (number | null)[],
  width: number,
  height: number,
  max: number
): string {
  if (values.length === 0) {
    return '';
  }
  const top = max > 0 ? max : Math.max(1, ...values.map(v => v ?? 0));
  const series = values.length === 1 ? [values[0], values[0]] : values;
  const step = width / (series.length - 1);
  return series
    .map((v, i) => {
      const clipped = Math.min(Math.max(v ?? 0, 0), top);
      const y = height - (clipped / top) * height;
      return `${(i * step).toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}

export interface INotice {
  kind: 'full' | 'idle';
  message: string;
}

/**
 * Decides when to notify: once when the slice becomes nearly full (again only after it dropped
 * below the warning level), and once per idle warning of the service.
 */
export class NotificationTracker {
  private _fullNotified = false;
  private _idleSeen = new Set<string>();

  update(status: IStatus): INotice[] {
    const out: INotice[] = [];
    const slice = status.slice;
    if (slice && slice.live) {
      const level = status.usage.level;
      if (level === 'full' && !this._fullNotified) {
        this._fullNotified = true;
        const worst = [...status.usage.gpus].sort((a, b) => b.fraction - a.fraction)[0];
        const where = slice.gpus.length > 1 && worst ? ` on GPU ${worst.index}` : '';
        const used = worst ? worst.used_mib : status.usage.memory_used_mib;
        const limit = worst ? worst.limit_mib : slice.limit_mib;
        out.push({
          kind: 'full',
          message:
            `Your GPU slice is nearly full${where}: ${gib(used)} of ${gib(limit)} GiB used. ` +
            'Free memory (del tensors, restart a kernel) before allocating more.'
        });
      } else if (level === 'ok') {
        this._fullNotified = false;
      }
    }
    const idle = status.idle;
    if (idle && idle.available && idle.warned) {
      const key = String(idle.notice_id ?? idle.warned_at ?? 'warned');
      if (!this._idleSeen.has(key)) {
        this._idleSeen.add(key);
        out.push({ kind: 'idle', message: idleMessage(idle) });
      }
    }
    return out;
  }
}

/** A time of day in the browser's zone and locale ("17:20", "5:20 PM"). */
export function localClock(iso: string): string {
  return new Date(Date.parse(iso)).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * The service writes the stop time in UTC ("stopped at 16:20 UTC"); the user reads it in their
 * own zone, from the exact ``stop_at`` that comes with it.
 */
export function localTimes(message: string, stopAt?: string | null): string {
  if (!stopAt || isNaN(Date.parse(stopAt))) {
    return message;
  }
  return message.replace(/\b\d{1,2}:\d{2} UTC\b/, localClock(stopAt));
}

/** The idle warning as the user reads it; the service's message when there is one. */
export function idleMessage(idle: IIdle, now: number = Date.now()): string {
  if (idle.message) {
    return localTimes(idle.message, idle.stop_at);
  }
  const why = idle.evidence && idle.evidence.length ? `: ${idle.evidence.join('; ')}` : '';
  if (idle.stop_at) {
    const minutes = Math.max(0, Math.round((Date.parse(idle.stop_at) - now) / 60000));
    return `This server will be stopped in ${minutes} min${why}`;
  }
  return `This server is idle and may be stopped${why}`;
}
