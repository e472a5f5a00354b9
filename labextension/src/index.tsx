/**
 * nbflow's JupyterLab extension: the side panel (runs, run detail, deployments), the
 * schedule dialog (file browser context menu and notebook toolbar) and the settings.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, showDialog, ToolbarButton } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { NotebookPanel } from '@jupyterlab/notebook';
import { KernelAPI, ServerConnection } from '@jupyterlab/services';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ReactWidget } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import * as React from 'react';
import { API_PATH, FlowRun, NbflowApi } from './api';
import { DEFAULT_SETTINGS, PanelContext, PanelSettings } from './components/context';
import { nbflowIcon } from './components/icons';
import { NbflowPanel } from './components/Panel';
import { RetryForm } from './components/RetryForm';
import { RunNowForm } from './components/RunNowForm';
import { OutputViewer } from './outputViewer';
import { ScheduleForm } from './components/ScheduleForm';
import { SocketLike } from './model';
import { installWidgetCancel } from './widgetCancel';

const PLUGIN_ID = 'nbflow-labextension:plugin';

export const CommandIDs = {
  open: 'nbflow:open-panel',
  schedule: 'nbflow:schedule-notebook'
};

/**
 * A dialog whose body has its own buttons: Enter in a field must not "accept" the dialog
 * (it has no buttons of its own, and the form would be lost), so the dialog ignores it.
 */
class FormDialog extends Dialog<unknown> {
  handleEvent(event: Event): void {
    if (event.type === 'keydown' && (event as KeyboardEvent).key === 'Enter') {
      return;
    }
    super.handleEvent(event);
  }
}

/** Show a React form in a dialog whose own buttons close it. */
function formDialog(
  title: string,
  render: (close: () => void) => React.ReactElement
): Promise<void> {
  let dialog: Dialog<unknown> | null = null;
  const close = () => dialog?.reject();
  const body = ReactWidget.create(render(close));
  body.addClass('nbflow-dialog-body');
  dialog = new FormDialog({ title, body, buttons: [], hasClose: true });
  dialog.addClass('nbflow-dialog');
  return dialog.launch().then(() => undefined);
}

/** A run's notebook path relative to the server root (where the document manager looks). */
function serverRelative(notebookPath: string | null | undefined): string {
  if (!notebookPath) {
    throw new Error('this run has no notebook file to open');
  }
  if (!notebookPath.startsWith('/')) {
    return notebookPath;
  }
  const root = (PageConfig.getOption('serverRoot') || '').replace(/\/+$/, '');
  if (root && notebookPath.startsWith(root + '/')) {
    return notebookPath.slice(root.length + 1);
  }
  throw new Error(`${notebookPath} is outside the Jupyter server's root (${root || 'unknown'})`);
}

function outputPath(run: FlowRun): string {
  const safe = (run.flow_name ?? 'flow').replace(/[^A-Za-z0-9_.-]+/g, '_');
  return `nbflow-outputs/${safe}-${run.name.replace(/[^A-Za-z0-9_.-]+/g, '_')}-${run.id.slice(0, 8)}.ipynb`;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'nbflow side panel: runs, deployments, schedules, logs and cancel.',
  autoStart: true,
  requires: [IDocumentManager],
  optional: [ILayoutRestorer, ISettingRegistry, IDefaultFileBrowser, IRenderMimeRegistry],
  activate: async (
    app: JupyterFrontEnd,
    docManager: IDocumentManager,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    fileBrowser: IDefaultFileBrowser | null,
    rendermime: IRenderMimeRegistry | null
  ) => {
    const serverSettings = app.serviceManager.serverSettings;
    // cache 'no-cache' (revalidate) instead of the default 'no-store', whose cache buster
    // (`&<timestamp>`) the API refuses as an unknown query parameter.
    const api = new NbflowApi((path, init) =>
      ServerConnection.makeRequest(
        serverSettings.baseUrl + path,
        { cache: 'no-cache', ...init },
        serverSettings
      )
    );
    const restartKernel = (kernelId: string) => KernelAPI.restartKernel(kernelId, serverSettings);
    // The notebook widget's Cancel button acts through the server while its cell runs.
    installWidgetCancel(document, {
      cancelRun: id => api.cancelRun(id),
      readRun: id => api.getRun(id),
      restartKernel
    });
    const settings: PanelSettings = { ...DEFAULT_SETTINGS };
    const contents = app.serviceManager.contents;

    const openSocket = (since?: string): SocketLike => {
      const params = new URLSearchParams();
      const token = serverSettings.token || PageConfig.getToken();
      if (token && serverSettings.appendToken) {
        params.set('token', token);
      }
      if (since) {
        params.set('since', since); // the server replays what changed while we were away
      }
      const query = params.toString();
      const url = serverSettings.wsUrl + `${API_PATH}/events` + (query ? `?${query}` : '');
      return new serverSettings.WebSocket(url) as unknown as SocketLike;
    };

    const ctx: PanelContext = {
      api,
      settings,
      openSocket,
      restartKernel,
      confirm: async (title, body, accept) => {
        const result = await showDialog({
          title,
          body,
          buttons: [Dialog.cancelButton({ label: 'Keep' }), Dialog.warnButton({ label: accept })]
        });
        return result.button.accept;
      },
      openOutput: async (run: FlowRun) => {
        const notebook = await api.getOutputNotebook(run.id);
        const path = outputPath(run);
        try {
          await contents.get('nbflow-outputs', { content: false });
        } catch {
          const dir = await contents.newUntitled({ type: 'directory', path: '' });
          await contents.rename(dir.path, 'nbflow-outputs');
        }
        await contents.save(path, { type: 'notebook', format: 'json', content: notebook });
        docManager.openOrReveal(path);
      },
      schedule: path => schedule(path),
      openInNotebook: async (run: FlowRun) => {
        const path = serverRelative(run.notebook_path);
        const widget = docManager.openOrReveal(path);
        if (!(widget instanceof NotebookPanel)) {
          throw new Error(`${path} did not open as a notebook`);
        }
        await widget.sessionContext.ready;
        const kernel = widget.sessionContext.session?.kernel;
        if (!kernel) {
          throw new Error(`${path} has no kernel: start one and try again`);
        }
        // The run's parameters (with the flow's defaults for those it did not give) as
        // variables, then the persisted outputs of its task cells.
        const flow = (await api.listFlows()).find(f => f.id === run.flow_id);
        const values: Record<string, unknown> = {};
        for (const [name, prop] of Object.entries(flow?.parameters_schema.properties ?? {})) {
          if (prop.default !== undefined) {
            values[name] = prop.default;
          }
        }
        Object.assign(values, run.parameters);
        const params = JSON.stringify(JSON.stringify(values));
        const code = [
          '%load_ext nbflow',
          'import json as _nbflow_json',
          `globals().update(_nbflow_json.loads(${params}))`,
          'del _nbflow_json',
          `%nbflow load ${run.id}`
        ].join('\n');
        let text = `parameters: ${Object.entries(values).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join(', ') || 'none'}\n`;
        const future = kernel.requestExecute({ code, store_history: false });
        future.onIOPub = msg => {
          const content = msg.content as { text?: string; ename?: string; evalue?: string };
          if (msg.header.msg_type === 'stream' && content.text) {
            text += content.text;
          } else if (msg.header.msg_type === 'error') {
            text += `${content.ename}: ${content.evalue}\n`;
          }
        };
        await future.done;
        return text;
      },
      viewOutput: async (run: FlowRun) => {
        if (!rendermime) {
          return ctx.openOutput(run);
        }
        const notebook = await api.getOutputNotebook(run.id);
        const viewer = new OutputViewer(rendermime, notebook, `${run.flow_name ?? 'run'} · ${run.name}`);
        viewer.id = `nbflow-output-${run.id}`;
        app.shell.add(viewer, 'main');
        app.shell.activateById(viewer.id);
      },
      retry: run => {
        let created: FlowRun | null = null;
        return formDialog(`Retry ${run.name}`, close => (
          <RetryForm
            api={api}
            run={run}
            onDone={r => {
              created = r;
              close();
            }}
            onCancel={close}
          />
        )).then(() => created);
      },
      runNow: deploymentId =>
        formDialog('Run deployment now', close => (
          <RunNowForm
            api={api}
            deploymentId={deploymentId}
            onDone={() => {
              close();
              void panel.runs.refresh();
            }}
            onCancel={close}
          />
        ))
    };

    const panel = new NbflowPanel(ctx);
    panel.title.icon = nbflowIcon;
    panel.title.caption = 'nbflow runs and deployments';
    app.shell.add(panel, 'left', { rank: 850 });
    if (restorer) {
      restorer.add(panel, 'nbflow-panel');
    }
    // `lab?nbflow-run=<id>` (the link in nbflow's notifications) opens that run's page.
    const linked = new URLSearchParams(window.location.search).get('nbflow-run');
    if (linked && /^[0-9a-f-]{36}$/i.test(linked)) {
      panel.showRun(linked);
      void app.restored.then(() => app.shell.activateById(panel.id));
    }

    const schedule = (path: string) =>
      formDialog(`Schedule ${path.replace(/^.*\//, '')} with nbflow`, close => (
        <ScheduleForm
          api={api}
          path={path}
          defaultRunner={settings.defaultRunner}
          onDone={() => {
            close();
            panel.deploymentsChanged.emit();
            void panel.runs.refresh();
            app.shell.activateById(panel.id);
          }}
          onCancel={close}
        />
      ));

    app.commands.addCommand(CommandIDs.open, {
      label: 'Open the nbflow panel',
      icon: nbflowIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CommandIDs.schedule, {
      label: 'Schedule with nbflow…',
      icon: nbflowIcon,
      execute: args => {
        let path = args.path as string | undefined;
        if (!path && fileBrowser) {
          const item = Array.from(fileBrowser.selectedItems())[0];
          path = item?.path;
        }
        if (!path) {
          const current = app.shell.currentWidget;
          if (current instanceof NotebookPanel) {
            path = current.context.path;
          }
        }
        if (path) {
          return schedule(path);
        }
      }
    });
    app.contextMenu.addItem({
      command: CommandIDs.schedule,
      selector: '.jp-DirListing-item[data-file-type="notebook"]',
      rank: 3
    });
    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (nb: NotebookPanel) => {
        const button = new ToolbarButton({
          icon: nbflowIcon,
          className: 'nbflow-schedule-button',
          tooltip: 'Schedule this notebook with nbflow',
          onClick: () => void schedule(nb.context.path)
        });
        nb.toolbar.insertItem(10, 'nbflowSchedule', button);
        return button as unknown as Widget & { dispose(): void };
      }
    });

    if (settingRegistry) {
      try {
        const loaded = await settingRegistry.load(PLUGIN_ID);
        const apply = () => {
          const c = loaded.composite as Partial<PanelSettings>;
          Object.assign(settings, {
            refresh: c.refresh ?? DEFAULT_SETTINGS.refresh,
            pollSeconds: c.pollSeconds ?? DEFAULT_SETTINGS.pollSeconds,
            pageSize: c.pageSize ?? DEFAULT_SETTINGS.pageSize,
            defaultRunner: c.defaultRunner ?? DEFAULT_SETTINGS.defaultRunner
          });
          panel.startLive();
        };
        apply();
        loaded.changed.connect(apply);
      } catch (err) {
        console.warn('nbflow: could not load settings; using defaults', err);
      }
    }
  }
};

export default plugin;
