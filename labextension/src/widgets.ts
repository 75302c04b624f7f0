/**
 * The status bar item and the side panel, as plain Lumino widgets drawn from an IStatus.
 * They import nothing from JupyterLab itself, so they render in jsdom for the unit tests.
 */

import { Widget } from '@lumino/widgets';

import {
  IKernelUse,
  IStatus,
  gib,
  idleMessage,
  levelColour,
  placedOn,
  sparklinePoints,
  statusText,
  statusTitle
} from './model';

const SVG = 'http://www.w3.org/2000/svg';

/** "GPU 5.2 / 8 GiB", coloured by how full the slice is. */
export class GpuStatusItem extends Widget {
  constructor() {
    super();
    this.addClass('aispike-StatusItem');
    this.node.dataset.level = 'none';
    this.node.textContent = statusText(null);
    this.node.title = statusTitle(null);
  }

  /** The status could not be read (yet): keep what is shown, say why in the tooltip. */
  showError(error: string): void {
    this.node.title = `${this.node.title}\n(${error})`.trim();
    if (this.node.dataset.level === 'none') {
      this.node.title = `Cannot read this server's GPU slice: ${error}`;
    }
  }

  render(status: IStatus | null): void {
    this.node.textContent = statusText(status);
    this.node.title = statusTitle(status);
    const level = status && status.slice ? status.usage.level : 'none';
    this.node.dataset.level = level;
    this.node.style.color = level === 'none' ? '' : levelColour(level);
  }
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls: string,
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = cls;
  if (text) {
    node.textContent = text;
  }
  return node;
}

/** A small SVG sparkline (memory against the slice, or utilisation against 100 %). */
export function sparkline(
  values: (number | null)[],
  max: number,
  cls: string,
  width = 120,
  height = 24
): SVGSVGElement {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', `aispike-Sparkline ${cls}`);
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', sparklinePoints(values, width, height, max));
  line.setAttribute('fill', 'none');
  svg.appendChild(line);
  return svg;
}

function kernelRow(k: IKernelUse, limitMib: number): HTMLElement {
  const row = el('div', 'aispike-Kernel');
  row.dataset.kernel = k.id;
  const title = k.path || `${k.name} kernel ${k.id.slice(0, 8)}`;
  row.appendChild(el('div', 'aispike-Kernel-name', title));
  const util = k.utilization_percent === null ? '–' : `${Math.round(k.utilization_percent)} %`;
  row.appendChild(
    el('div', 'aispike-Kernel-numbers', `${gib(k.memory_used_mib)} GiB · ${util} GPU`)
  );
  const lines = el('div', 'aispike-Kernel-sparklines');
  lines.appendChild(
    sparkline(k.history.map(p => p.memory_used_mib), limitMib, 'aispike-Sparkline-memory')
  );
  lines.appendChild(
    sparkline(k.history.map(p => p.utilization_percent), 100, 'aispike-Sparkline-util')
  );
  row.appendChild(lines);
  return row;
}

/** The side panel: the slice, each GPU's fill, each kernel's sparklines, quota and idle state. */
export class GpuPanel extends Widget {
  constructor() {
    super();
    this.id = 'aispike-gpu-panel';
    this.addClass('aispike-Panel');
    this.title.caption = 'My GPU slice';
    this.render(null);
  }

  render(status: IStatus | null, error = ''): void {
    const root = this.node;
    root.textContent = '';
    root.appendChild(el('h2', 'aispike-Panel-title', 'My GPU slice'));
    if (error) {
      root.appendChild(el('div', 'aispike-Panel-error', error));
    }
    if (!status) {
      return;
    }
    const slice = status.slice;
    if (!slice) {
      root.appendChild(el('div', 'aispike-Panel-noslice', 'This server has no GPU slice.'));
    } else {
      const head = el('div', 'aispike-Panel-slice');
      head.textContent =
        `${gib(slice.limit_mib)} GiB on ${placedOn(slice)}` +
        (slice.simulated ? ' (simulated)' : '');
      root.appendChild(head);
      if (!slice.live) {
        root.appendChild(
          el(
            'div',
            'aispike-Panel-nolive',
            slice.simulated
              ? 'Simulated GPUs: this server has the slice\'s settings but no device, so there ' +
                  'is no live GPU use to show.'
              : 'Live GPU use unavailable: ' + (status.nvml.problems[0] || 'no NVML reading')
          )
        );
      }
      for (const g of slice.live ? status.usage.gpus : []) {
        const bar = el('div', 'aispike-Bar');
        bar.dataset.level = g.level;
        const fill = el('div', 'aispike-Bar-fill');
        fill.style.width = `${Math.min(100, g.fraction * 100).toFixed(1)}%`;
        fill.style.background = levelColour(g.level);
        bar.appendChild(fill);
        const label = el(
          'div',
          'aispike-Bar-label',
          `GPU ${g.index}: ${gib(g.used_mib)} / ${gib(g.limit_mib)} GiB`
        );
        root.appendChild(label);
        root.appendChild(bar);
      }
      const kernels = el('div', 'aispike-Kernels');
      kernels.appendChild(el('h3', '', 'Kernels'));
      const rows = [...status.usage.kernels, ...(status.usage.other ? [status.usage.other] : [])];
      if (rows.length === 0) {
        kernels.appendChild(el('div', 'aispike-Kernels-empty', 'No running kernels.'));
      }
      for (const k of rows) {
        kernels.appendChild(kernelRow(k, slice.limit_mib));
      }
      root.appendChild(kernels);
    }
    const idle = status.idle;
    if (idle && idle.available && idle.warned) {
      root.appendChild(el('div', 'aispike-Panel-idle', idleMessage(idle)));
    }
    const quota = status.quota;
    if (quota && quota.available && quota.limits) {
      const used = quota.usage?.gpu_memory_mib ?? 0;
      const limit = quota.limits.gpu_memory_mib;
      const text =
        limit === null || limit === undefined
          ? `Quota: ${gib(used)} GiB of GPU memory in use (no limit), tier ${quota.tier}`
          : `Quota: ${gib(used)} of ${gib(limit)} GiB of GPU memory in use, tier ${quota.tier}`;
      root.appendChild(el('div', 'aispike-Panel-quota', text));
    }
  }
}
