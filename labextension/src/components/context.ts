import { FlowRun, NbflowApi } from '../api';
import { SocketLike } from '../model';

/** The panel's settings (from the settings registry, see schema/plugin.json). */
export interface PanelSettings {
  refresh: 'live' | 'poll' | 'manual';
  pollSeconds: number;
  pageSize: number;
  defaultRunner: string;
}

export const DEFAULT_SETTINGS: PanelSettings = {
  refresh: 'live',
  pollSeconds: 5,
  pageSize: 50,
  defaultRunner: 'subprocess'
};

/** What the components need from JupyterLab, injected by the plugin. */
export interface PanelContext {
  api: NbflowApi;
  settings: PanelSettings;
  openSocket: () => SocketLike;
  openOutput: (run: FlowRun) => Promise<void>;
  confirm: (title: string, body: string, accept: string) => Promise<boolean>;
  runNow: (deploymentId: string) => Promise<void>;
  /** Open the schedule dialog of a notebook (it edits the notebook's deployment if any). */
  schedule: (path: string) => Promise<void>;
  /**
   * Open the run's notebook with the run's parameters set and its completed task cells'
   * variables loaded into the kernel (`%nbflow load`); answers what the kernel printed.
   */
  openInNotebook: (run: FlowRun) => Promise<string>;
  /** Show a run's output notebook read-only in a main-area tab (no kernel). */
  viewOutput: (run: FlowRun) => Promise<void>;
  /** Ask for a retry of a finished run (a form); the new run, or null if abandoned. */
  retry: (run: FlowRun) => Promise<FlowRun | null>;
  /** Restart a kernel of this Jupyter server (a cancelled run's kernel that kept running). */
  restartKernel: (kernelId: string) => Promise<void>;
}
