/**
 * The notebook widget's Cancel button, made to act while its cell runs.
 *
 * The widget is an ipywidgets view: its click travels to the kernel as a comm message, and a
 * kernel busy executing the cell handles it only when the cell ends.  This hook catches the
 * click in the page (the button carries `nbflow-cancel-run` and `nbflow-run-<id>` classes)
 * and cancels the run through the server at once; the server interrupts the run's kernel.
 * The comm click still reaches the kernel later, where it finds the run ended (a fallback
 * where this extension is absent).  If the kernel ignores the interrupt, the server ends the
 * run Cancelled with `kernel_stopped: false`, and the button turns into "Restart kernel".
 *
 * It imports nothing from JupyterLab, so it is unit-tested in jsdom.
 */
import { FlowRun, TERMINAL_TYPES } from './api';

export const CANCEL_BUTTON_CLASS = 'nbflow-cancel-run';
const RUN_CLASS = /^nbflow-run-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

/** What the hook needs: the API calls, injected so tests can use a real server or fakes. */
export interface WidgetCancelDeps {
  cancelRun: (id: string) => Promise<unknown>;
  readRun: (id: string) => Promise<FlowRun>;
  restartKernel: (kernelId: string) => Promise<void>;
  /** Milliseconds between two looks at the cancelled run (default 500). */
  pollMs?: number;
  /** How long to follow the cancelled run, in milliseconds (default 120 000). */
  followMs?: number;
}

/** The run id a widget button belongs to, from its `nbflow-run-<id>` class. */
export function runIdOf(button: Element): string | null {
  for (const name of Array.from(button.classList)) {
    const match = RUN_CLASS.exec(name);
    if (match) {
      return match[1];
    }
  }
  return null;
}

function setLabel(button: HTMLButtonElement, label: string, title: string): void {
  button.textContent = label;
  button.title = title;
}

/** Whether a cancelled run's kernel is still executing: the server could not stop it. */
export function kernelLeftRunning(run: FlowRun): string | null {
  const state = run.state;
  if (!state || state.type !== 'CANCELLED' || state.data?.kernel_stopped !== false) {
    return null;
  }
  const kernelId = state.data?.kernel_id;
  return typeof kernelId === 'string' ? kernelId : null;
}

/**
 * Listen (capture phase) for clicks on widget Cancel buttons under `root`; return a function
 * that removes the listener.
 */
export function installWidgetCancel(root: Document | HTMLElement, deps: WidgetCancelDeps): () => void {
  const pollMs = deps.pollMs ?? 500;
  const followMs = deps.followMs ?? 120000;

  const follow = async (button: HTMLButtonElement, runId: string): Promise<void> => {
    const end = Date.now() + followMs;
    while (Date.now() < end) {
      await new Promise(resolve => setTimeout(resolve, pollMs));
      let run: FlowRun;
      try {
        run = await deps.readRun(runId);
      } catch {
        continue;
      }
      if (!run.state || !TERMINAL_TYPES.has(run.state.type)) {
        continue;
      }
      const kernelId = kernelLeftRunning(run);
      if (kernelId && button.isConnected) {
        button.dataset.nbflowRestart = kernelId;
        button.disabled = false;
        setLabel(
          button,
          'Restart kernel',
          'The run is cancelled, but its kernel ignored the interrupt and may still be ' +
            'executing the cell. Restart the kernel to stop it (its variables are lost).'
        );
      }
      return;
    }
  };

  const onClick = (event: Event): void => {
    const target = event.target as Element | null;
    const button = target?.closest?.(`button.${CANCEL_BUTTON_CLASS}`) as HTMLButtonElement | null;
    if (!button) {
      return;
    }
    const kernelId = button.dataset.nbflowRestart;
    if (kernelId) {
      // Restart mode is this hook's own: the kernel must not see a click of a run it ended.
      event.stopPropagation();
      event.preventDefault();
      delete button.dataset.nbflowRestart;
      button.disabled = true;
      setLabel(button, 'Restarting kernel…', 'Restarting the kernel');
      deps.restartKernel(kernelId).catch(err => {
        button.disabled = false;
        button.dataset.nbflowRestart = kernelId;
        setLabel(button, 'Restart kernel', `The restart failed: ${(err as Error).message}`);
      });
      return;
    }
    const runId = runIdOf(button);
    if (!runId || button.dataset.nbflowCancel) {
      return;
    }
    button.dataset.nbflowCancel = 'sent';
    // Let the click reach the widget first (its comm message is the fallback); then show it.
    setTimeout(() => {
      button.disabled = true;
      setLabel(button, 'Cancelling…', 'Cancelling: the kernel is being interrupted');
    }, 0);
    deps.cancelRun(runId).then(
      () => follow(button, runId),
      err => {
        // Not a run of this server (e.g. a kernel with its own store): the comm click,
        // handled when the cell ends, is the only way.
        console.warn(`nbflow: could not cancel run ${runId} through the server`, err);
        button.title = 'Cancel requested; the kernel handles it when the running cell ends';
      }
    );
  };

  root.addEventListener('click', onClick, true);
  return () => root.removeEventListener('click', onClick, true);
}
