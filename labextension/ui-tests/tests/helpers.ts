/** What the galata specs share: where screenshots go, the API's URL, a notebook builder. */
import * as path from 'path';

export const SHOTS = path.resolve(__dirname, '..', '..', '..', 'docs', 'screenshots');
export const API = 'http://localhost:8888/nbflow/api/v1';

/** A notebook (nbformat 4.5, Python 3 kernelspec) with one code cell per source. */
export function notebook(cells: string[]): string {
  return JSON.stringify({
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: 'python3', display_name: 'Python 3', language: 'python' } },
    cells: cells.map((source, i) => ({
      cell_type: 'code', id: `c${i}`, metadata: {}, outputs: [], execution_count: null, source
    }))
  });
}
