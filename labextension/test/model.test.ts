import { describe, expect, it } from 'vitest';

import {
  IStatus,
  NotificationTracker,
  gib,
  idleMessage,
  levelOf,
  localClock,
  placedOn,
  sparklinePoints,
  statusText,
  statusTitle
} from '../src/model';
import { GpuPanel, GpuStatusItem } from '../src/widgets';

function status(usedMib: number, limitMib = 8192, extra: Partial<IStatus> = {}): IStatus {
  const fraction = usedMib / limitMib;
  const level = levelOf(fraction, 0.8, 0.95);
  return {
    version: 1,
    time: 0,
    user: 'alice',
    server: '',
    source: 'nvml',
    nvml: { available: true, problems: [] },
    slice: {
      backend: 'native',
      model: 'NVIDIA H200',
      requested_model: 'NVIDIA H200',
      limit_mib: limitMib,
      indices: [0],
      gpus: [
        {
          index: 0,
          uuid: 'GPU-a',
          model: 'NVIDIA H200',
          memory_total_mib: 143771,
          limit_mib: limitMib,
          mig_profile: ''
        }
      ],
      live: true
    },
    usage: {
      memory_used_mib: usedMib,
      memory_limit_mib: limitMib,
      utilization_percent: 91,
      level,
      gpus: [{ index: 0, used_mib: usedMib, limit_mib: limitMib, fraction, level }],
      kernels: [
        {
          id: 'k1',
          name: 'python3',
          path: 'train.ipynb',
          state: 'busy',
          memory_used_mib: usedMib,
          utilization_percent: 91,
          pids: [429],
          by_gpu: { '0': usedMib },
          history: [
            { t: 1, memory_used_mib: 1024, utilization_percent: null },
            { t: 2, memory_used_mib: usedMib, utilization_percent: 91 }
          ]
        }
      ],
      other: null,
      last_gpu_activity: null
    },
    thresholds: { warn: 0.8, full: 0.95 },
    ...extra
  };
}

/** What the demo's server extension reports for a simulated 4 GiB slice on GPU 1. */
function simulated(): IStatus {
  const s = status(0, 4096);
  s.nvml = { available: false, problems: ['NVML library not found'] };
  s.source = 'nvml';
  s.slice = {
    backend: 'local',
    model: 'A100 80GB',
    requested_model: 'any',
    limit_mib: 4096,
    indices: [1],
    gpus: [
      { index: 1, uuid: 'GPU-b', model: 'A100 80GB', memory_total_mib: 0, limit_mib: 4096, mig_profile: '' }
    ],
    live: false,
    simulated: true
  };
  s.usage = { ...s.usage, gpus: [{ index: 1, used_mib: 0, limit_mib: 4096, fraction: 0, level: 'ok' }] };
  return s;
}

describe('status text', () => {
  it('shows used and limit in GiB', () => {
    expect(gib(5325)).toBe('5.2');
    expect(gib(8192)).toBe('8');
    expect(statusText(status(5325))).toBe('GPU 5.2 / 8 GiB');
  });

  it('says when there is no GPU slice, and not before it knows', () => {
    expect(statusText({ ...status(0), slice: null })).toBe('no GPU slice');
    expect(statusTitle({ ...status(0), slice: null })).toContain('no GPU slice');
    // Before the first status arrives the slice is unknown, not absent.
    expect(statusText(null)).toBe('GPU …');
    expect(statusText(null)).not.toContain('no GPU');
    expect(statusTitle(null)).not.toContain('no GPU');
  });

  it('counts several GPUs', () => {
    const s = status(3000, 16384);
    s.slice!.gpus.push({ ...s.slice!.gpus[0], index: 1, uuid: 'GPU-b' });
    expect(statusText(s)).toBe('2 GPUs 2.9 / 16 GiB');
  });

  it('says where a slice known only from the environment is, with no made-up use', () => {
    const s = status(0);
    s.slice!.live = false;
    expect(statusText(s)).toBe('GPU 0 · 8 GiB');
    expect(statusTitle(s)).toContain('GPU slice: 8 GiB on GPU 0 (NVIDIA H200)');
    expect(statusTitle(s)).toContain('Live use unavailable');
  });

  it('shows the GPU a simulated slice was placed on (the demo)', () => {
    const s = simulated();
    expect(statusText(s)).toBe('GPU 1 · 4 GiB (simulated)');
    const title = statusTitle(s);
    expect(title).toContain('GPU slice: 4 GiB on GPU 1 (A100 80GB) (simulated)');
    for (const bad of ['GPU -1', 'GPU ?', 'on any', 'no GPU slice', 'unknown GPU']) {
      expect(title).not.toContain(bad);
      expect(statusText(s)).not.toContain(bad);
    }
    expect(placedOn(s.slice!)).toBe('GPU 1 (A100 80GB)');
  });

  it('never names a GPU "any" nor index -1', () => {
    const s = simulated();
    s.slice!.gpus[0] = { ...s.slice!.gpus[0], index: -1, model: '' };
    s.slice!.model = 'any';
    expect(placedOn(s.slice!)).toBe('a GPU');
    expect(statusText(s)).toBe('GPU · 4 GiB (simulated)');
    expect(statusTitle(s)).toContain('4 GiB on a GPU');
  });
});

describe('levels and sparklines', () => {
  it('colours by fill', () => {
    expect([0.5, 0.8, 0.94, 0.95, 1.2].map(f => levelOf(f, 0.8, 0.95))).toEqual([
      'ok',
      'warn',
      'warn',
      'full',
      'full'
    ]);
  });

  it('scales points into the box, clipping and treating missing values as 0', () => {
    expect(sparklinePoints([0, 50, 100, 200, null], 40, 10, 100)).toBe(
      '0.0,10.0 10.0,5.0 20.0,0.0 30.0,0.0 40.0,10.0'
    );
    expect(sparklinePoints([5], 10, 10, 10)).toBe('0.0,5.0 10.0,5.0');
    expect(sparklinePoints([], 10, 10, 10)).toBe('');
  });
});

describe('notifications', () => {
  it('notifies once when nearly full, again only after it drained', () => {
    const t = new NotificationTracker();
    expect(t.update(status(4000))).toEqual([]);
    const first = t.update(status(8000));
    expect(first).toHaveLength(1);
    expect(first[0].kind).toBe('full');
    expect(first[0].message).toContain('7.8 of 8 GiB');
    expect(t.update(status(8100))).toEqual([]);
    expect(t.update(status(7000))).toEqual([]); // warn level: still armed off
    expect(t.update(status(1000))).toEqual([]);
    expect(t.update(status(8000))).toHaveLength(1);
  });

  it('notifies each idle warning once, with the service message', () => {
    const t = new NotificationTracker();
    const idle = {
      available: true,
      warned: true,
      notice_id: 7,
      message: 'this server will be stopped in 30 min: GPU idle for 2 h'
    };
    expect(t.update(status(0, 8192, { idle }))).toEqual([
      { kind: 'idle', message: idle.message }
    ]);
    expect(t.update(status(0, 8192, { idle }))).toEqual([]);
    expect(t.update(status(0, 8192, { idle: { ...idle, notice_id: 8 } }))).toHaveLength(1);
    expect(t.update(status(0, 8192, { idle: { available: false } }))).toEqual([]);
  });

  it('writes its own idle message from the stop time', () => {
    const now = Date.parse('2026-01-01T12:00:00Z');
    expect(
      idleMessage(
        { available: true, warned: true, stop_at: '2026-01-01T12:30:00Z', evidence: ['GPU idle for 2 h'] },
        now
      )
    ).toBe('This server will be stopped in 30 min: GPU idle for 2 h');
  });
});

describe('widgets', () => {
  it('status item shows text and level', () => {
    const item = new GpuStatusItem();
    expect(item.node.textContent).toBe('GPU …'); // not "no GPU slice" before it knows
    item.render(status(8000));
    expect(item.node.textContent).toBe('GPU 7.8 / 8 GiB');
    expect(item.node.dataset.level).toBe('full');
    item.render(status(1000));
    expect(item.node.dataset.level).toBe('ok');
  });

  it('panel lists kernels with memory and utilisation sparklines', () => {
    const panel = new GpuPanel();
    panel.render(
      status(5325, 8192, {
        quota: { available: true, tier: 'normal', usage: { gpu_memory_mib: 8192 }, limits: { gpu_memory_mib: 16384 } },
        idle: { available: true, warned: true, message: 'stopping soon' }
      })
    );
    const row = panel.node.querySelector('[data-kernel="k1"]')!;
    expect(row.querySelector('.aispike-Kernel-name')!.textContent).toBe('train.ipynb');
    expect(row.querySelectorAll('svg.aispike-Sparkline')).toHaveLength(2);
    expect(panel.node.querySelector('.aispike-Bar')!.getAttribute('data-level')).toBe('ok');
    expect(panel.node.querySelector('.aispike-Panel-quota')!.textContent).toContain('8 of 16 GiB');
    expect(panel.node.querySelector('.aispike-Panel-idle')!.textContent).toBe('stopping soon');
    panel.render({ ...status(0), slice: null });
    expect(panel.node.querySelector('.aispike-Panel-noslice')).not.toBeNull();
  });

  it('panel of a simulated slice names its GPU and draws no made-up use', () => {
    const panel = new GpuPanel();
    panel.render(simulated());
    const text = panel.node.textContent || '';
    expect(panel.node.querySelector('.aispike-Panel-slice')!.textContent).toBe(
      '4 GiB on GPU 1 (A100 80GB) (simulated)'
    );
    expect(panel.node.querySelector('.aispike-Panel-noslice')).toBeNull();
    expect(panel.node.querySelector('.aispike-Bar')).toBeNull();
    expect(text).toContain('no device');
    for (const bad of ['GPU -1', 'GPU ?', 'on any', 'no GPU slice', 'backend']) {
      expect(text).not.toContain(bad);
    }
  });
});

describe('times', () => {
  it('reads the stop time of an idle warning in the local zone', () => {
    const stopAt = '2026-12-04T16:20:00Z';
    const message = "Your server 'default' is idle; it will be stopped at 16:20 UTC unless you use it.";
    const shown = idleMessage({ available: true, warned: true, message, stop_at: stopAt });
    expect(shown).not.toContain('UTC');
    expect(shown).toContain(`stopped at ${localClock(stopAt)} unless`);
    // Without the exact time the message is left as the service wrote it.
    expect(idleMessage({ available: true, warned: true, message })).toBe(message);
  });
});
