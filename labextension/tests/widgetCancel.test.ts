/** The widget Cancel hook: cancels through the real server, then offers a kernel restart. */
import { Flow, FlowRun, NbflowApi } from '../src/api';
import { installWidgetCancel, kernelLeftRunning, runIdOf } from '../src/widgetCancel';
import { client } from './server';

/** The parts of an ipywidgets button the hook touches. */
class FakeButton {
  classList: string[];
  dataset: Record<string, string> = {};
  disabled = false;
  textContent = 'Cancel run';
  title = '';
  isConnected = true;
  constructor(runId: string) {
    this.classList = ['jupyter-button', 'nbflow-cancel-run', `nbflow-run-${runId}`];
  }
  closest(selector: string): FakeButton | null {
    return selector === 'button.nbflow-cancel-run' ? this : null;
  }
}

function click(root: EventTarget, button: FakeButton): Event {
  const event = new Event('click', { cancelable: true });
  Object.defineProperty(event, 'target', { value: button });
  root.dispatchEvent(event);
  return event;
}

async function until(check: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 20000;
  while (!check()) {
    if (Date.now() > end) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise(r => setTimeout(r, 50));
  }
}

let api: NbflowApi;
let flow: Flow;

beforeAll(async () => {
  api = client();
  flow = await api.createFlow({ name: 'widget_cancel_flow' });
});

describe('widget Cancel hook', () => {
  it('reads the run id from the button classes', () => {
    const id = '0c4a2d3e-1b2c-4d5e-8f90-123456789abc';
    expect(runIdOf(new FakeButton(id) as unknown as Element)).toBe(id);
    const other = new FakeButton(id);
    other.classList = ['nbflow-cancel-run', 'nbflow-run-not-a-uuid'];
    expect(runIdOf(other as unknown as Element)).toBeNull();
  });

  it('cancels the run through the server at the click, and lets the click through', async () => {
    const run = await api.createFlowRun({ flow_id: flow.id, name: 'hooked', state: { type: 'SCHEDULED' } });
    const root = new EventTarget();
    const restarts: string[] = [];
    const remove = installWidgetCancel(root as unknown as Document, {
      cancelRun: id => api.cancelRun(id),
      readRun: id => api.getRun(id),
      restartKernel: async id => void restarts.push(id),
      pollMs: 50
    });
    const button = new FakeButton(run.id);
    const event = click(root, button);
    // The widget's own (comm) click handler still runs: the hook does not stop it.
    expect(event.defaultPrevented).toBe(false);
    await until(() => button.textContent === 'Cancelling…', 'the button to say Cancelling');
    expect(button.disabled).toBe(true);
    const end = Date.now() + 20000;
    let state = (await api.getRun(run.id)).state;
    while (state?.type !== 'CANCELLED' && Date.now() < end) {
      await new Promise(r => setTimeout(r, 50));
      state = (await api.getRun(run.id)).state;
    }
    expect(state?.type).toBe('CANCELLED');
    // A second click sends nothing more (and a stopped kernel needs no restart).
    click(root, button);
    await new Promise(r => setTimeout(r, 200));
    expect(restarts).toEqual([]);
    expect(button.dataset.nbflowRestart).toBeUndefined();
    remove();
  });

  it('turns into Restart kernel when the kernel ignored the interrupt', async () => {
    const kernelId = 'a-kernel-id';
    const run = await api.createFlowRun({ flow_id: flow.id, name: 'stubborn', state: { type: 'SCHEDULED' } });
    const root = new EventTarget();
    const restarts: string[] = [];
    const ended: FlowRun = {
      ...run,
      state: {
        id: 's',
        type: 'CANCELLED',
        name: 'Cancelled',
        timestamp: new Date().toISOString(),
        data: { kernel_id: kernelId, kernel_stopped: false }
      }
    };
    expect(kernelLeftRunning(ended)).toBe(kernelId);
    expect(kernelLeftRunning({ ...ended, state: { ...ended.state!, data: { kernel_stopped: true } } })).toBeNull();
    const remove = installWidgetCancel(root as unknown as Document, {
      cancelRun: id => api.cancelRun(id),
      // What the server answers once its grace has passed with the kernel still busy.
      readRun: async () => ended,
      restartKernel: async id => void restarts.push(id),
      pollMs: 20
    });
    const button = new FakeButton(run.id);
    click(root, button);
    await until(() => button.textContent === 'Restart kernel', 'the Restart kernel offer');
    expect(button.disabled).toBe(false);
    const event = click(root, button);
    // The restart click is the hook's own: the kernel's widget must not see it.
    expect(event.defaultPrevented).toBe(true);
    expect(restarts).toEqual([kernelId]);
    expect(button.textContent).toBe('Restarting kernel…');
    remove();
  });
});
