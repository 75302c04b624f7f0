/**
 * AISpike Hub in JupyterLab: a status bar item "GPU 5.2 / 8 GiB", a side panel with
 * per-kernel sparklines, a launcher card for the slice, and notifications when the slice is
 * nearly full or the hub's idle monitor warns.  Polls the server extension's
 * aispike/api/status.
 */

import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ILauncher } from '@jupyterlab/launcher';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';

import { gpuIcon } from './icon';
import { IStatus, NotificationTracker, gib, placedOn } from './model';
import { GpuPanel, GpuStatusItem } from './widgets';

const PLUGIN_ID = 'aispike-hub-lab:plugin';
const SHOW_COMMAND = 'aispike:show-gpu-panel';
const POLL_MS = 5000;

async function fetchStatus(settings: ServerConnection.ISettings): Promise<IStatus> {
  const url = URLExt.join(settings.baseUrl, 'aispike', 'api', 'status');
  const response = await ServerConnection.makeRequest(url, {}, settings);
  if (!response.ok) {
    throw new Error(`AISpike status: HTTP ${response.status}`);
  }
  return (await response.json()) as IStatus;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'My GPU slice and live GPU use (AISpike Hub)',
  autoStart: true,
  optional: [IStatusBar, ILabShell, ILauncher],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    labShell: ILabShell | null,
    launcher: ILauncher | null
  ) => {
    const settings = ServerConnection.makeSettings();
    const item = new GpuStatusItem();
    const panel = new GpuPanel();
    panel.title.icon = gpuIcon;
    const tracker = new NotificationTracker();
    let last: IStatus | null = null;

    if (statusBar) {
      statusBar.registerStatusItem(PLUGIN_ID, {
        item,
        align: 'left',
        rank: 50
      });
      item.node.addEventListener('click', () => app.commands.execute(SHOW_COMMAND));
    }
    if (labShell) {
      labShell.add(panel, 'right', { rank: 900 });
    }

    app.commands.addCommand(SHOW_COMMAND, {
      label: () =>
        last && last.slice
          ? `GPU slice: ${gib(last.slice.limit_mib)} GiB on ${placedOn(last.slice)}`
          : 'GPU slice',
      caption: 'Show my GPU slice and its live use',
      icon: gpuIcon,
      execute: () => {
        if (labShell) {
          labShell.activateById(panel.id);
        }
      }
    });
    if (launcher) {
      launcher.add({ command: SHOW_COMMAND, category: 'Other', rank: 0 });
    }

    const poll = async (): Promise<void> => {
      try {
        last = await fetchStatus(settings);
        item.render(last);
        panel.render(last);
        for (const notice of tracker.update(last)) {
          Notification.warning(notice.message, { autoClose: false });
        }
      } catch (error) {
        panel.render(last, String(error));
        if (!last) {
          item.showError(String(error));
        }
      }
    };
    void app.restored.then(() => {
      void poll();
      window.setInterval(() => {
        if (document.visibilityState !== 'hidden') {
          void poll();
        }
      }, POLL_MS);
    });
  }
};

export default plugin;
